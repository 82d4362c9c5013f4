"""Best-of-N grading overhead per candidate, against one refine of that candidate.

    .venv/bin/python benchmarks/bench_best_of.py [--repeats 5]

Candidates are photos of ../shared/faces (one per person, persons b..f) refined toward person_a_1 with the
landmark engine graded by MobileFaceNet (`RefineConfig(swap_engine="landmark", analyzer="dlib",
grader="mobilefacenet")`). Per candidate, medians over `--repeats` calls of:
- refine: the whole `RefinePipeline.__call__` (it already contains the quality grading, "grade" stage);
- grader: one `IdentityGrader.score` call on the refined portrait (the second recogniser's model, 2 faces);
- rank: `rank_candidates` over all candidates, divided by their number (what best-of-N adds to a run).

Goal (issue 14): grading overhead per candidate <= 10% of a refine. Best-of-N adds only "rank": the grader
score it ranks by is computed by every refine that has a grader, chosen or not. The grader column shows the
share of that model call inside a refine, for reference.

Measured on this machine (2 CPUs shared with other work, load average 11: wall times are inflated):

    cpus=2 load_avg=11.10 candidates=5 repeats=3
    median per candidate: refine 494.4 ms, grader score 53.8 ms, rank 30.4 us
    best-of-N overhead (rank) / refine: 0.00006 (goal <= 0.10)
    grader model call / refine (already inside every graded refine): 0.109
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

FACES = Path(__file__).resolve().parents[2] / "shared" / "faces"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from portraitforge.config import RefineConfig
    from portraitforge.imageio import load_image
    from portraitforge.pipelines.best_of import rank_candidates
    from portraitforge.pipelines.portrait import PortraitImage
    from portraitforge.pipelines.refine import RefinePipeline

    labels = {r["file"]: r["identity"] for r in csv.DictReader((FACES / "identities.csv").open())}
    firsts: dict[str, str] = {}
    for name, person in sorted(labels.items()):
        firsts.setdefault(person, name)
    refiner = RefinePipeline.from_config(RefineConfig(swap_engine="landmark", analyzer="dlib", grader="mobilefacenet"))
    grader = refiner.grader
    if grader is None:
        raise SystemExit("MobileFaceNet grader not in the model store: run `portraitforge models setup`")
    identity = refiner.identity_from_image(load_image(FACES / firsts["person_a"]).rgb, "person_a")
    names = [firsts[p] for p in sorted(firsts) if p != "person_a"][:5]
    targets = [load_image(FACES / n).rgb for n in names]
    identity_vec = identity.embeddings.get(grader.embedding_space)
    if identity_vec is None:
        identity_vec = grader.reference_embedding(identity)

    refine_ms: list[float] = []
    grader_ms: list[float] = []
    rank_ms: list[float] = []
    refiner(targets[0], identity)  # warm-up
    for _ in range(args.repeats):
        results = []
        for i, target in enumerate(targets):
            start = time.perf_counter()
            result = refiner(target, identity)
            refine_ms.append((time.perf_counter() - start) * 1e3)
            result_face = max(refiner.analyzer.detect(result.image), key=lambda f: f.area)
            original_face = max(refiner.analyzer.detect(target), key=lambda f: f.area)
            start = time.perf_counter()
            grader.score(result.image, result_face, target, original_face, identity_vec)
            grader_ms.append((time.perf_counter() - start) * 1e3)
            results.append(
                PortraitImage(i, result.report.status, "", result.image, target, i, result.report, [], {}, "")
            )
        start = time.perf_counter()
        rank_candidates(results, keep=1)
        rank_ms.append((time.perf_counter() - start) * 1e3 / len(results))

    refine, grade, rank = (statistics.median(x) for x in (refine_ms, grader_ms, rank_ms))
    print(f"cpus={os.cpu_count()} load_avg={os.getloadavg()[0]:.2f} candidates={len(targets)} repeats={args.repeats}")
    print(f"median per candidate: refine {refine:.1f} ms, grader score {grade:.1f} ms, rank {rank * 1e3:.1f} us")
    print(f"best-of-N overhead (rank) / refine: {rank / refine:.5f} (goal <= 0.10)")
    print(f"grader model call / refine (already inside every graded refine): {grade / refine:.3f}")


if __name__ == "__main__":
    main()
