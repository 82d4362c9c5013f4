"""Batch spec: validation errors name the line and the field; expansion counts and content-hash ids."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from batch_fixtures import REPO, popen_cli, run_cli

from portraitforge.batch.spec import SpecError, expand, load_spec, parse_spec

GENERATE_SPEC = """\
name: idols
output:
  dir: out
  naming: "{identity}/{character}_{outfit}_s{seed}"
prompts:
  templates:
    - "{character}, {outfit}, portrait photo"
  variables:
    character: [aiko]
    outfit: [school uniform, stage dress, hoodie]
  negative: blurry
identities:
  - image: a.png
    name: aiko
  - image: b.png
    name: rin
seeds: [1, 2]
model:
  source: tiny-model
  steps: 2
  width: 64
  height: 64
refine:
  strength: 0.9
"""


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    (tmp_path / "a.png").write_bytes(b"identity a")  # only hashed at plan time, never decoded
    (tmp_path / "b.png").write_bytes(b"identity b")
    return tmp_path


def _write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _error(folder: Path, text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(_write(folder, text))
    return info.value


def test_expands_prompts_identities_seeds_into_12_items(spec_dir: Path) -> None:
    loaded = load_spec(_write(spec_dir, GENERATE_SPEC))
    items = expand(loaded)
    assert len(items) == 3 * 2 * 2
    assert len({it.id for it in items}) == 12
    assert len({it.output_relpath for it in items}) == 12
    first = items[0]
    assert first.prompt == "aiko, school uniform, portrait photo"
    assert first.output_relpath == "aiko/aiko_school uniform_s1.png"
    assert first.params["refine"]["strength"] == 0.9
    assert first.params["model"] == {
        "source": "tiny-model",
        "scheduler": None,
        "steps": 2,
        "guidance": 7.0,
        "width": 64,
        "height": 64,
    }
    assert {it.identity.label for it in items} == {"aiko", "rin"}


def test_ids_are_stable_across_folders_and_processes(spec_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    ids = [it.id for it in expand(load_spec(_write(spec_dir, GENERATE_SPEC)))]
    # Same spec and same file contents elsewhere (another machine): same ids.
    other = tmp_path_factory.mktemp("elsewhere")
    (other / "a.png").write_bytes(b"identity a")
    (other / "b.png").write_bytes(b"identity b")
    assert [it.id for it in expand(load_spec(_write(other, GENERATE_SPEC)))] == ids
    # A fresh interpreter with another hash seed agrees too.
    code = (
        "import json,sys; from portraitforge.batch.spec import load_spec, expand; "
        "print(json.dumps([i.id for i in expand(load_spec(sys.argv[1]))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(other / "spec.yaml")],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
        cwd=REPO,
    )
    assert json.loads(out.stdout) == ids


def test_ids_follow_content_and_parameters(spec_dir: Path) -> None:
    base = {it.output_relpath: it.id for it in expand(load_spec(_write(spec_dir, GENERATE_SPEC)))}
    # Output naming is not a parameter of the image: renaming keeps ids.
    renamed = expand(load_spec(_write(spec_dir, GENERATE_SPEC.replace("_s{seed}", "_seed{seed}"))))
    assert sorted(it.id for it in renamed) == sorted(base.values())
    # A refiner setting is: every id changes.
    stronger = expand(load_spec(_write(spec_dir, GENERATE_SPEC.replace("strength: 0.9", "strength: 0.8"))))
    assert not {it.id for it in stronger} & set(base.values())
    # The identity photo's content is (not its path).
    (spec_dir / "b.png").write_bytes(b"another photo")
    changed = expand(load_spec(_write(spec_dir, GENERATE_SPEC)))
    assert sum(it.id in base.values() for it in changed) == 6  # only aiko's items survive


def test_seed_range_and_unused_variables(spec_dir: Path) -> None:
    text = GENERATE_SPEC.replace("seeds: [1, 2]", "seeds: {start: 10, count: 3}")
    text = text.replace('"{identity}/{character}_{outfit}_s{seed}"', '"{identity}/{prompt_index}_{seed}"')
    # A template that does not use `outfit` is not multiplied by it.
    text = text.replace('- "{character}, {outfit}, portrait photo"', '- "{character}, portrait photo"')
    items = expand(load_spec(_write(spec_dir, text)))
    assert len(items) == 1 * 2 * 3
    assert sorted({it.seed for it in items}) == [10, 11, 12]


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        ("strength: 0.9", "strength: 2", 24, "refine.strength", "less than or equal to 1"),
        ("  steps: 2", "  steps: two", 20, "model.steps", "valid integer"),
        ("seeds: [1, 2]", "seeds: [1, 1]", 17, "seeds", "duplicates"),
        ("  negative: blurry", "  negatve: blurry", 11, "prompts.negatve", "Extra inputs"),
        ("  - image: b.png", "  - imag: b.png", 15, "identities.1.imag", "Extra inputs"),
        ("    name: rin", "    name: aiko", 12, "identities", "used twice"),
        ("  width: 64", "  width: 65", 21, "model.width", "multiple of 8"),
        ("  - image: b.png", "  - image: missing.png", 15, "identities.1.image", "not found"),
        ("{character}, {outfit}, portrait", "{character}, {pose}, portrait", 7, "prompts.templates.0", "pose"),
        ("_s{seed}", "_s{sede}", 4, "output.naming", "sede"),
        ("refine:\n  strength: 0.9", "drafts:\n  folder: .", 1, "spec", "exactly one of"),
    ],
)
def test_validation_errors_point_to_line_and_field(
    spec_dir: Path, old: str, new: str, line: int, field: str, message: str
) -> None:
    assert old in GENERATE_SPEC
    err = _error(spec_dir, GENERATE_SPEC.replace(old, new))
    issue = err.issues[0]
    assert (issue.line, issue.field) == (line, field), err.issues
    assert message in issue.message
    assert f"spec.yaml:{line}: {field}:" in str(err)
    assert "\n" not in str(err)


def test_missing_required_and_yaml_syntax(spec_dir: Path) -> None:
    err = _error(spec_dir, "name: x\nidentities:\n  - image: a.png\ndrafts: {folder: .}\n")
    assert err.issues[0].field == "output" and "required" in err.issues[0].message
    err = _error(spec_dir, "name: x\noutput: {dir: out\nseeds: [1]\n")
    assert err.issues[0].field == "yaml" and err.issues[0].line == 3


def test_plan_cli_counts_and_one_line_errors(spec_dir: Path) -> None:
    spec = _write(spec_dir, GENERATE_SPEC)
    ok = run_cli("batch", "plan", str(spec), "--json")
    assert ok.returncode == 0, ok.stderr
    plan = json.loads(ok.stdout)
    assert plan["items"] == 12 and plan["axes"] == {"identities": 2, "prompts": 3, "seeds": 2}
    assert not (spec_dir / "out").exists()  # plan runs nothing, writes nothing
    human = run_cli("batch", "plan", str(spec))
    assert human.stdout.startswith("12 items (2 identities x 3 prompts x 2 seeds)")
    bad = _write(spec_dir, GENERATE_SPEC.replace("strength: 0.9", "strength: 2"), "bad.yaml")
    res = run_cli("batch", "plan", str(bad))
    assert res.returncode == 2  # an out-of-range value is a usage error, as `swap --strength 2` is
    assert res.stderr.count("\n") == 1 and "bad.yaml:24: refine.strength:" in res.stderr
    assert "Traceback" not in res.stderr


def test_parse_rejects_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="must be a mapping"):
        parse_spec("- just\n- a list\n", tmp_path / "s.yaml")


def test_example_config_is_valid_and_plans_48_items() -> None:
    loaded = load_spec(REPO / "configs" / "batch_example.yaml")
    items = expand(loaded)
    assert len(items) == 2 * 3 * 2 * 4  # identities x outfits x backgrounds x seeds
    assert len({item.id for item in items}) == len(items)


def test_plan_into_a_closed_pipe_ends_quietly() -> None:
    """`portraitforge batch plan SPEC | head -0`: no traceback and no "internal error" line."""
    proc = popen_cli("batch", "plan", str(REPO / "configs" / "batch_example.yaml"))
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the plan is printed
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert stderr == ""
