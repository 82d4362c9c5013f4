"""The CLI's error contract, walked over every command (README "Reports, quality and exit codes").

Commands come from the click tree of `portraitforge.cli.app`, so a new command is walked too. Each gets a bad
option value; commands that read a file get a missing and a non-image/garbage one; commands that write get an
unwritable folder (`/proc/nope`, which not even root can create). Every case must end with exactly one
`error: ` line on stderr, no traceback, the README's exit code and no file written. The cases fail before any
model loads, so the walk runs as real subprocesses (`python -m portraitforge.cli`) in about a minute.

A new command must say which files it reads and writes (BAD_FILES / UNWRITABLE) or that it has none
(NO_FILE_CASES); `test_every_command_is_walked` fails until it does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import yaml
from PIL import Image

from portraitforge.cli import app
from portraitforge.types import EXIT_CODES, EXIT_USAGE, Status

REPO = Path(__file__).resolve().parents[1]
UNWRITABLE_DIR = "/proc/nope"  # mkdir fails with ENOENT, for root as well
BAD_INPUT = EXIT_CODES[Status.BAD_INPUT]
Leaf = tuple[str, ...]


def leaf_commands() -> dict[Leaf, typer.core.TyperCommand]:
    """Every runnable command, by its words after `portraitforge`."""
    leaves: dict[Leaf, typer.core.TyperCommand] = {}

    def walk(command: object, path: Leaf) -> None:
        children = getattr(command, "commands", None)
        if children:
            for name, child in children.items():
                walk(child, (*path, name))
        else:
            leaves[path] = command  # type: ignore[assignment]

    walk(typer.main.get_command(app), ())
    return leaves


LEAVES = leaf_commands()


@dataclass(frozen=True)
class Files:
    """Inputs shared by the cases, in one temporary folder."""

    root: Path
    image: Path  # a real photo
    fake_image: Path  # text named .png
    spec: Path  # a valid refine-only batch spec
    bad_value_spec: Path  # the same spec with refine.strength: 2
    bad_value_preset: Path  # a --config preset with strength: 2
    unwritable_spec: Path  # a valid spec whose output folder cannot be created


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("contract")
    image = root / "face.png"
    Image.new("RGB", (64, 64), (120, 100, 90)).save(image)
    fake = root / "notes.png"
    fake.write_text("this is a text file, not a picture\n")
    drafts = root / "drafts"
    drafts.mkdir()
    Image.new("RGB", (64, 64), (90, 100, 120)).save(drafts / "draft.png")

    def spec(name: str, **changes: object) -> Path:
        data: dict[str, object] = {
            "name": "contract",
            "output": {"dir": str(root / "batch_out")},
            "drafts": {"folder": str(drafts)},
            "identities": [{"image": str(image), "name": "face"}],
        }
        data.update(changes)
        path = root / name
        path.write_text(yaml.safe_dump(data))
        return path

    preset = root / "bad_preset.yaml"
    preset.write_text("strength: 2\n")
    return Files(
        root=root,
        image=image,
        fake_image=fake,
        spec=spec("spec.yaml"),
        bad_value_spec=spec("bad_value.yaml", refine={"strength": 2}),
        bad_value_preset=preset,
        unwritable_spec=spec("unwritable.yaml", output={"dir": f"{UNWRITABLE_DIR}/batch"}),
    )


def argument_values(leaf: Leaf, f: Files) -> dict[str, list[str]]:
    """Valid values for required parameters, by click parameter name, so that a case fails on what it breaks.
    Options are given with their flag."""
    out = str(f.root / "out")
    values = {
        "targets": [str(f.image)],
        "identity": ["--identity", str(f.image)],
        "output": ["--output", out],
        "prompt": ["a portrait photo"],
        "model": ["--model", str(f.root / "model.safetensors")],
        "name": ["face"],
        "images": [str(f.image)],
        "old": ["face"],
        "new": ["other"],
        "file": [str(f.root / "face.safetensors")],
        "spec": [str(f.spec)],
        "source": [str(f.root)],
    }
    return values


def fill(leaf: Leaf, f: Files, **replace: list[str]) -> list[str]:
    """Arguments for `leaf` with every required parameter set, some of them replaced."""
    values = argument_values(leaf, f)
    args: list[str] = []
    for param in LEAVES[leaf].params:
        if param.name in replace:
            args += replace[param.name]
        elif param.required:
            assert param.name in values, f"{' '.join(leaf)}: add a valid value for '{param.name}' to argument_values"
            args += values[param.name]
    return args


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    new_files: list[str]


def _files(f: Files, home: Path) -> set[Path]:
    """Files and folders under the test folders, except model caches (dlib unpacks its detector on first use)."""
    return {p for d in (f.root, home) for p in d.rglob("*") if "cache" not in p.relative_to(d).parts}


def run(f: Files, home: Path, *args: str) -> Run:
    before = _files(f, home)
    env = {**os.environ, "PORTRAITFORGE_HOME": str(home), "PORTRAITFORGE_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "portraitforge.cli", *args],
        capture_output=True,
        text=True,
        cwd=f.root,
        env=env,
        timeout=300,  # `ui` would serve forever if a case slipped through
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, sorted(str(p) for p in _files(f, home) - before))


def assert_one_error(result: Run, code: int, args: list[str]) -> None:
    where = f"portraitforge {' '.join(args)}"
    assert "Traceback" not in result.stderr, (where, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (where, result.stderr)
    assert result.code == code, (where, result.code, result.stderr)
    assert result.new_files == [], (where, result.new_files)


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


# ------------------------------------------------------------------------------------ bad option values


def takes_word_parsed_value(param: object) -> bool:
    """An option whose value typer parses (a number, a choice): a word fails in click, before the command."""
    desc = param.type_descriptor  # type: ignore[attr-defined]
    return param.param_type_name == "option" and (desc.is_choice or desc.annotation in (int, float))  # type: ignore[attr-defined]


def names_a_path(param: object) -> bool:
    desc = param.type_descriptor  # type: ignore[attr-defined]
    return bool(desc.is_path or desc.annotation == list[Path])


def bad_option(leaf: Leaf, f: Files) -> list[str]:
    """The first option that parses its value gets a word; a command without one gets an unknown option."""
    for param in LEAVES[leaf].params:
        if takes_word_parsed_value(param):
            return [*fill(leaf, f), param.opts[0], "nope"]  # type: ignore[attr-defined]
    return [*fill(leaf, f), "--no-such-option"]


@pytest.mark.parametrize("leaf", sorted(LEAVES), ids=" ".join)
def test_bad_option_value_is_one_usage_line(leaf: Leaf, files: Files, home: Path) -> None:
    args = [*leaf, *bad_option(leaf, files)]
    assert_one_error(run(files, home, *args), EXIT_USAGE, args)


# Out-of-range values are usage errors wherever they are written: a flag, a preset file or a batch spec.
VALUE_CASES: dict[str, tuple[Leaf, dict[str, list[str]]]] = {
    "swap flag": (("swap",), {"strength": ["--strength", "2"]}),
    "swap preset": (("swap",), {"config": ["--config", "{bad_value_preset}"]}),
    "generate size": (("generate",), {"size": ["--size", "0x5"]}),
    "generate flag": (("generate",), {"strength": ["--strength", "2"]}),
    "batch plan spec": (("batch", "plan"), {"spec": ["{bad_value_spec}"]}),
    "batch run spec": (("batch", "run"), {"spec": ["{bad_value_spec}"]}),
    "identity arcface": (("identity", "add"), {"arcface": ["--arcface", "sometimes"]}),
    "models pack": (("models", "download"), {"pack": ["--pack", "nope"]}),
}


@pytest.mark.parametrize("case", sorted(VALUE_CASES))
def test_out_of_range_value_is_exit_2_from_flags_presets_and_specs(case: str, files: Files, home: Path) -> None:
    leaf, replace = VALUE_CASES[case]
    concrete = {k: [v.format(**vars(files)) for v in vs] for k, vs in replace.items()}
    args = [*leaf, *fill(leaf, files, **concrete)]
    assert_one_error(run(files, home, *args), EXIT_USAGE, args)


# ------------------------------------------------------------------------- missing and non-image files

# Per command: parameters to replace with something unreadable (`{missing}` is a path that does not exist).
BAD_FILES: dict[Leaf, list[dict[str, list[str]]]] = {
    ("swap",): [{"targets": ["{missing}.png"]}, {"config": ["--config", "{missing}.yaml"]}],
    ("generate",): [{"model": ["--model", "{missing}.safetensors"]}],
    ("identity", "add"): [{"images": ["{missing}.png"]}, {"images": ["{fake_image}"]}],
    ("identity", "import"): [{"file": ["{missing}.safetensors"]}, {"file": ["{fake_image}"]}],
    ("batch", "plan"): [{"spec": ["{missing}.yaml"]}, {"spec": ["{fake_image}"]}],
    ("batch", "run"): [{"spec": ["{missing}.yaml"]}, {"spec": ["{image}"]}],
    ("batch", "status"): [{"spec": ["{missing}.yaml"]}],
    ("batch", "export"): [{"spec": ["{missing}.yaml"]}, {"spec": ["{spec}"]}],  # no manifest yet
    ("batch", "review"): [{"spec": ["{missing}.yaml"]}, {"spec": ["{spec}"]}],
    ("models", "import"): [{"source": ["{missing}"]}, {"source": ["{image}"]}],
    ("inspect",): [{"images": ["{missing}.png"]}, {"images": ["{fake_image}"]}],
}

# Per command: parameters to point at an unwritable folder.
UNWRITABLE: dict[Leaf, list[dict[str, list[str]]]] = {
    ("swap",): [{"output": ["--output", "{nope}/out.png"]}, {"log": ["--log", "{nope}/runs.jsonl"]}],
    ("generate",): [{"output": ["--output", "{nope}"]}, {"log": ["--log", "{nope}/runs.jsonl"]}],
    ("demo",): [{"output": ["--output", "{nope}"]}],
    ("ui",): [{"store": ["--store", "{nope}"]}],
    ("identity", "add"): [{"store_dir": ["--store", "{nope}"]}],
    ("identity", "import"): [{"file": ["{fake_image}"], "store_dir": ["--store", "{nope}"]}],
    ("identity", "export"): [{"file": ["{nope}/face.safetensors"]}],  # unknown identity first: still 3
    ("batch", "run"): [{"spec": ["{unwritable_spec}"]}],
    ("batch", "export"): [{"output": ["--output", "{nope}/rows.csv"]}],
    ("models", "download"): [{"models_dir": ["--models-dir", "{nope}"], "names": ["mobilefacenet"]}],
    ("models", "setup"): [{"models_dir": ["--models-dir", "{nope}"]}],
    ("models", "import"): [{"models_dir": ["--models-dir", "{nope}"]}],
}

# Commands that read or write no file of their own (the store commands fail on the unknown name first).
NO_FILE_CASES = {
    ("identity", "list"): "reads the store; a missing store lists no identities",
    ("identity", "show"): "store read only",
    ("identity", "rm"): "needs an existing identity (unknown name: exit 3, tested in test_identity_store_cli)",
    ("identity", "rename"): "needs an existing identity",
    ("identity", "consent"): "needs an existing identity",
    ("identity", "verify"): "store read, rewritten only with --recompute on existing identities",
    ("models", "list"): "reads the store",
    ("models", "verify"): "reads the store",
    ("models", "path"): "prints a path",
    ("inspect",): "--log and --store are only read (a missing log finds no entry); it writes nothing",
}


def _cases(table: dict[Leaf, list[dict[str, list[str]]]]) -> list[tuple[Leaf, int]]:
    return [(leaf, i) for leaf, cases in sorted(table.items()) for i in range(len(cases))]


def _concrete(files: Files, replace: dict[str, list[str]]) -> dict[str, list[str]]:
    names = {**vars(files), "missing": str(files.root / "missing"), "nope": UNWRITABLE_DIR}
    return {k: [v.format(**names) for v in vs] for k, vs in replace.items()}


@pytest.mark.parametrize(
    ("leaf", "index"), _cases(BAD_FILES), ids=lambda x: " ".join(x) if isinstance(x, tuple) else str(x)
)
def test_missing_or_garbage_file_is_one_bad_input_line(leaf: Leaf, index: int, files: Files, home: Path) -> None:
    args = [*leaf, *fill(leaf, files, **_concrete(files, BAD_FILES[leaf][index]))]
    assert_one_error(run(files, home, *args), BAD_INPUT, args)


@pytest.mark.parametrize(
    ("leaf", "index"), _cases(UNWRITABLE), ids=lambda x: " ".join(x) if isinstance(x, tuple) else str(x)
)
def test_unwritable_folder_is_one_bad_input_line(leaf: Leaf, index: int, files: Files, home: Path) -> None:
    args = [*leaf, *fill(leaf, files, **_concrete(files, UNWRITABLE[leaf][index]))]
    result = run(files, home, *args)
    assert_one_error(result, BAD_INPUT, args)
    assert not Path(UNWRITABLE_DIR).exists()


def test_every_command_is_walked() -> None:
    """A new command must say which files it reads and writes, or that it has none."""
    classified = set(BAD_FILES) | set(UNWRITABLE) | set(NO_FILE_CASES)
    assert set(LEAVES) - classified == set(), "add the new command's file cases to this module"
    assert classified - set(LEAVES) == set(), "a walked command no longer exists"
    for leaf, command in LEAVES.items():
        for param in command.params:  # every parameter that names a file or folder is exercised
            if param.param_type_name == "argument" and names_a_path(param):
                assert leaf in BAD_FILES or leaf in UNWRITABLE, (leaf, param.name)
            if {"--output", "--store", "--models-dir", "--log"} & set(param.opts):  # type: ignore[attr-defined]
                assert leaf in UNWRITABLE or leaf in NO_FILE_CASES, (leaf, param.name)


def test_one_mapping_for_internal_errors_keyboard_interrupt_and_memory() -> None:
    """What no command raises on purpose still ends as one line and the table's code."""
    from portraitforge.cli import exit_code_for
    from portraitforge.errors import ParameterError

    assert exit_code_for(KeyboardInterrupt()) == EXIT_CODES[Status.INTERRUPTED]
    assert exit_code_for(MemoryError()) == EXIT_CODES[Status.OUT_OF_MEMORY]
    assert exit_code_for(PermissionError(13, "Permission denied", "/x")) == BAD_INPUT
    assert exit_code_for(ParameterError("--x 2: too large")) == EXIT_USAGE
    assert exit_code_for(ZeroDivisionError("boom")) == EXIT_CODES[Status.INTERNAL]
