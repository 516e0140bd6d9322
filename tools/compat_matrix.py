"""The transformers compatibility matrix of ``vlmops.patch_model`` (``make test-compat``).

For every release in RELEASES (or those named on the command line):

1. install it, with its dependencies, into its own cached folder ``.compat/transformers-<release>/``
   (``pip install --target``; numpy, torch and their kin are removed so the project's own stay in
   charge, and the folder goes in front of ``PYTHONPATH``); the release the running environment
   already has needs no folder;
2. take the fingerprints of the rules ``patch_model`` uses with it (one variant per family and
   kind, ``vlmops.transformers.patch.select_rules``);
3. run every family's parity tests (PARITY: outputs against the unpatched model, the dispatch-mode
   proof that the vlmops ops ran, save/load) against it, trusting those fingerprints for the run.

A family is verified on a release when all its parity tests passed there. On the releases in
OUTSIDE (before the declared range) it runs ``patch_model(model, verify=True)`` on every family's
model instead (tests/test_compat_verify.py). The results are kept in ``tools/compat_matrix.json``;
from them the tool writes ``vlmops/transformers/verified.py`` (the fingerprints of verified
families, tagged with their releases: what ``patch_model`` accepts) and the tables of README.md
between its markers, and prints them. ``--render`` rewrites those two files from the recorded
results alone.

``--check RELEASE ...`` is CI's run: the parity tests against the committed ``verified.py``, without
trusting anything; it fails unless every family that ``tools/compat_matrix.json`` records as
verified on that release passes.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".compat"
RESULTS = ROOT / "tools" / "compat_matrix.json"
VERIFIED = ROOT / "vlmops" / "transformers" / "verified.py"
README = ROOT / "README.md"
BEGIN, END = "<!-- compat-matrix:begin -->", "<!-- compat-matrix:end -->"

# The declared range: its oldest and newest releases and releases spread over it. Five months before
# the newest, transformers' vision towers took their current form (transformers.vision_utils and
# the decorators the patched tower forwards reuse); the rotary modules took theirs in 5.17.0
# (vlmops.transformers.adapters serves both).
RELEASES = ("5.10.4", "5.13.1", "5.15.1", "5.17.0", "5.19.0", "5.20.2", "5.22.2", "5.23.0", "5.24.0", "5.25.0")

# Releases outside the declared range on which the matrix runs verify=True (VERIFY_TEST, with the
# fingerprint table as it is): the newest release before the range and the first 5.0 release.
OUTSIDE = ("5.9.0", "5.0.0")
VERIFY_TEST = "tests/test_compat_verify.py::test_verify_applies_exactly_the_rules_that_agree"

# Per family, the parity tests: pytest node ids relative to the repository root.
QWEN, PIXTRAL = "tests/test_patch_qwen.py", "tests/test_patch_pixtral.py"
QWEN_TEXT = "tests/test_patch_qwen_text.py"
CLIP, MLLAMA, SHUFFLE = "tests/test_patch_clip.py", "tests/test_patch_mllama.py", "tests/test_patch_pixel_shuffle.py"
RANGES = "tests/test_mllama_ranges.py"
PARITY = {
    "Qwen2-VL": (
        f"{QWEN}::test_patched_model_matches_and_runs_vlmops[Qwen2-VL]",
        f"{QWEN}::test_qwen2_vl_generate_gives_identical_tokens",
        f"{QWEN}::test_save_load_round_trip[Qwen2-VL]",
        f"{QWEN_TEXT}::test_text_rope_matches_logits_and_runs_vlmops_rope[Qwen2-VL]",
        f"{QWEN_TEXT}::test_text_rope_generate_gives_identical_tokens[Qwen2-VL]",
        f"{QWEN_TEXT}::test_text_rope_save_load_round_trip[Qwen2-VL]",
    ),
    "Qwen2.5-VL": (
        f"{QWEN}::test_patched_model_matches_and_runs_vlmops[Qwen2.5-VL]",
        f"{QWEN}::test_qwen2_5_vl_window_and_full_attention_layers_match",
        f"{QWEN}::test_save_load_round_trip[Qwen2.5-VL]",
        f"{QWEN_TEXT}::test_text_rope_matches_logits_and_runs_vlmops_rope[Qwen2.5-VL]",
        f"{QWEN_TEXT}::test_text_rope_generate_gives_identical_tokens[Qwen2.5-VL]",
        f"{QWEN_TEXT}::test_text_rope_save_load_round_trip[Qwen2.5-VL]",
    ),
    "Qwen3-VL": (
        f"{QWEN}::test_patched_model_matches_and_runs_vlmops[Qwen3-VL]",
        f"{QWEN}::test_save_load_round_trip[Qwen3-VL]",
        f"{QWEN_TEXT}::test_text_rope_matches_logits_and_runs_vlmops_rope[Qwen3-VL]",
        f"{QWEN_TEXT}::test_text_rope_generate_gives_identical_tokens[Qwen3-VL]",
        f"{QWEN_TEXT}::test_text_rope_save_load_round_trip[Qwen3-VL]",
    ),
    "InternVL": (
        f"{SHUFFLE}::test_patched_model_matches_and_runs_vlmops[InternVL]",
        f"{SHUFFLE}::test_save_and_load_round_trip[InternVL]",
    ),
    "Idefics3": (
        f"{SHUFFLE}::test_patched_model_matches_and_runs_vlmops[Idefics3]",
        f"{SHUFFLE}::test_save_and_load_round_trip[Idefics3]",
    ),
    "SmolVLM": (
        f"{SHUFFLE}::test_patched_model_matches_and_runs_vlmops[SmolVLM]",
        f"{SHUFFLE}::test_save_and_load_round_trip[SmolVLM]",
    ),
    "Pixtral": (
        f"{PIXTRAL}::test_patched_tower_matches_every_layer[sdpa]",
        f"{PIXTRAL}::test_patched_tower_matches_every_layer[eager]",
        f"{PIXTRAL}::test_mistral3_features_and_logits_match",
        f"{PIXTRAL}::test_patch_twice_ops_restriction_and_save_load",
    ),
    "Mllama": (
        f"{MLLAMA}::test_patched_mllama_matches_logits_and_generate",
        f"{MLLAMA}::test_save_and_load_round_trip",
        *(
            f"{RANGES}::test_logits_match_transformers[{layout}-{dtype}]"
            for layout in ("one-image", "apart", "consecutive")
            for dtype in ("float32", "bfloat16")
        ),
        f"{RANGES}::test_generate_matches_with_kv_cache",
        f"{RANGES}::test_decode_rows_from_the_full_mask_match",
        f"{RANGES}::test_row_mask_and_ranges_follow_transformers_mask_function",
        f"{RANGES}::test_no_op_creates_a_tensor_of_the_dense_mask_size",
        f"{RANGES}::test_peak_memory_is_lower_by_at_least_the_mask",
    ),
    "LLaVA": (f"{CLIP}::test_vlm_matches_and_runs_vlmops[LLaVA]", f"{CLIP}::test_save_and_load_round_trip[LLaVA]"),
    "LLaVA-OneVision": (
        f"{CLIP}::test_vlm_matches_and_runs_vlmops[LLaVA-OneVision]",
        f"{CLIP}::test_save_and_load_round_trip[LLaVA-OneVision]",
    ),
    "CLIP": (
        f"{CLIP}::test_tower_matches_and_runs_vlmops[CLIP]",
        f"{CLIP}::test_tower_interpolated_positions[CLIP]",
        f"{CLIP}::test_save_and_load_round_trip[CLIP]",
    ),
    "SigLIP": (
        f"{CLIP}::test_tower_matches_and_runs_vlmops[SigLIP]",
        f"{CLIP}::test_tower_interpolated_positions[SigLIP]",
        f"{CLIP}::test_save_and_load_round_trip[SigLIP]",
    ),
}
# Removed from an installed release's folder: the project's own copies must be the ones imported.
PROJECT_PACKAGES = (
    "numpy",
    "numpy.libs",
    "torch",
    "torchgen",
    "functorch",
    "triton",
    "nvidia",
    "sympy",
    "mpmath",
    "networkx",
    "bin",
)


def release_key(release: str) -> tuple:
    return tuple(int(part) for part in release.split("."))


def environment_release() -> str:
    return importlib.metadata.version("transformers")


def install(release: str) -> Path | None:
    """The folder to put in front of PYTHONPATH for ``release`` (None: the environment has it),
    installed from the package registry on first use."""
    if release == environment_release():
        return None
    folder = CACHE / f"transformers-{release}"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    wheel = _wheel(release)
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(folder),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"pip install --target {folder} {wheel.name} failed:\n{result.stdout}\n{result.stderr}")
    for path in folder.iterdir():
        name = path.name.split("-")[0]
        if name in PROJECT_PACKAGES or (path.is_dir() and name.removesuffix(".libs") in PROJECT_PACKAGES):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (folder / ".complete").write_text(f"installed in {time.monotonic() - started:.0f} s\n")
    print(f"installed transformers {release} into {folder.relative_to(ROOT)} in {time.monotonic() - started:.0f} s")
    return folder


def _wheel(release: str) -> Path:
    """transformers' wheel of ``release``, downloaded once into .compat/wheels/."""
    wheels = CACHE / "wheels"
    found = sorted(wheels.glob(f"transformers-{release}-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--dest",
            str(wheels),
            f"transformers=={release}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    found = sorted(wheels.glob(f"transformers-{release}-*.whl"))
    if result.returncode or not found:
        raise RuntimeError(f"pip download transformers=={release} failed:\n{result.stdout}\n{result.stderr}")
    return found[0]


def release_date(release: str) -> str:
    """The date the release's wheel was built (its newest file), as YYYY-MM-DD."""
    with zipfile.ZipFile(_wheel(release)) as wheel:
        year, month, day = max(info.date_time for info in wheel.infolist())[:3]
    return f"{year:04d}-{month:02d}-{day:02d}"


def _env(folder: Path | None) -> dict:
    paths = [str(folder)] if folder else []
    paths += [str(ROOT), str(ROOT / "tools")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def fingerprints(folder: Path | None) -> dict:
    """{rule key: {"fingerprint", "sources", "api"}, {"absent": its target class} or {"missing": the
    refusal}} of the rules patch_model selects with the release in ``folder``, taken in a subprocess
    that imports it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fingerprints.json"
        subprocess.run(
            [sys.executable, __file__, "--fingerprints-to", str(out)], env=_env(folder), cwd=ROOT, check=True
        )
        return json.loads(out.read_text())


def _dump_fingerprints(out: str) -> None:
    import transformers

    from vlmops.transformers import RULES, UnsupportedTransformersError
    from vlmops.transformers.patch import fingerprint, resolve_or_none, select_rules

    rules = {}
    for rule in select_rules(RULES):
        if resolve_or_none(rule.target) is None:
            rules[rule.key] = {"absent": rule.target}
            continue
        try:
            combined, sources = fingerprint(rule)
        except UnsupportedTransformersError as error:
            rules[rule.key] = {"missing": str(error)}
            continue
        rules[rule.key] = {"fingerprint": combined, "sources": sources, "api": rule.api}
    Path(out).write_text(json.dumps({"transformers": transformers.__version__, "rules": rules}))


def run_tests(folder: Path | None, nodes, trust: bool) -> tuple[dict, dict]:
    """({node id: outcome}, {node id: recorded "verify" property}) of the tests ``nodes`` run
    against the release in ``folder``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "outcomes.json"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "compat_trust",
            "--compat-report",
            str(report),
            *(["--compat-trust"] if trust else []),
            *nodes,
        ]
        result = subprocess.run(command, env=_env(folder), cwd=ROOT, capture_output=True, text=True, check=False)
        recorded = json.loads(report.read_text()) if report.exists() else {"outcomes": {}, "properties": {}}
    outcomes = recorded["outcomes"]
    for node in nodes:
        outcomes.setdefault(node, "not run")
    if any(outcome != "passed" for outcome in outcomes.values()):
        print(result.stdout[-6000:], result.stderr[-2000:], sep="\n")
    return outcomes, recorded["properties"]


def run_parity(folder: Path | None, families, trust: bool) -> dict:
    """{node id: outcome} of the families' parity tests run against the release in ``folder``."""
    return run_tests(folder, [node for family in families for node in PARITY[family]], trust)[0]


def _families_of(rules: dict) -> dict:
    """{family: {rule key: entry}} of a fingerprint dump."""
    families = {}
    for key, entry in rules.items():
        families.setdefault(key.split("/")[0], {})[key] = entry
    return families


def matrix(releases) -> dict:
    """Installs, fingerprints and tests ``releases``; returns their results."""
    results = {}
    for release in releases:
        started = time.monotonic()
        folder = install(release)
        dump = fingerprints(folder)
        assert dump["transformers"] == release, (dump["transformers"], release)
        by_family = _families_of(dump["rules"])
        # A family whose model class is missing from this release is absent, not failed.
        absent = {family for family, rules in by_family.items() if all("absent" in entry for entry in rules.values())}
        present = [family for family in PARITY if family not in absent]
        outcomes = run_parity(folder, present, trust=True)
        families = {}
        for family, nodes in PARITY.items():
            if family in absent:
                families[family] = "absent"
            elif all(outcomes[node] == "passed" for node in nodes):
                families[family] = "verified"
            else:
                families[family] = "failed"
        results[release] = {
            "date": release_date(release),
            "families": families,
            "rules": dump["rules"],
            "seconds": round(time.monotonic() - started),
        }
        print(
            f"transformers {release}: "
            + ", ".join(f"{f} {s}" for f, s in families.items())
            + f" ({results[release]['seconds']} s)",
            flush=True,
        )
    return results


def verify_outside(releases) -> dict:
    """VERIFY_TEST of every family against ``releases``: {release: {"date", "families": {family:
    {"outcome", and "applied" and "verified" kinds, or "refused"}}}}."""
    results = {}
    for release in releases:
        started = time.monotonic()
        folder = install(release)
        nodes = {family: f"{VERIFY_TEST}[{family}]" for family in PARITY}
        outcomes, properties = run_tests(folder, list(nodes.values()), trust=False)
        families = {family: {"outcome": outcomes[node], **properties.get(node, {})} for family, node in nodes.items()}
        results[release] = {"date": release_date(release), "families": families}
        print(
            f"transformers {release} (outside the range), verify=True: "
            + ", ".join(f"{f} {_outside_cell(e)}" for f, e in families.items())
            + f" ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    return results


def _outside_cell(entry: dict) -> str:
    if entry["outcome"] != "passed":
        return f"✗ ({entry['outcome']})"
    if "refused" in entry:
        return "refused (code missing)"
    verified = entry["verified"]
    agreed = sum(1 for status in verified.values() if status == "agreed")
    refused = len(verified) - agreed
    applied = len(entry["applied"])
    return (
        f"{applied} of {applied + refused} rules"
        + (f" ({agreed} verified on the model)" if agreed else "")
        + (f", {refused} refused by verify" if refused else "")
    )


def verified_source(results: dict) -> str:
    """The text of vlmops/transformers/verified.py for the results: per rule, the fingerprints of
    releases on which its family was verified."""
    releases, rule_prints, sources = {}, {}, {}
    for release in sorted(results, key=release_key):
        entry = results[release]
        for family, status in entry["families"].items():
            if status != "verified":
                continue
            releases.setdefault(family, []).append(release)
            for key, rule in entry["rules"].items():
                if key.split("/")[0] != family or "fingerprint" not in rule:
                    continue
                rule_prints.setdefault(key, {}).setdefault(rule["fingerprint"], []).append(release)
                for spec, sha in rule["sources"].items():
                    tags = sources.setdefault(spec, {}).setdefault(sha, [])
                    if release not in tags:
                        tags.append(release)
    tested = sorted(results, key=release_key)
    lines = [
        '"""The transformers code each patch rule was verified on: written by tools/compat_matrix.py from the',
        "parity tests it ran (do not edit).",
        "",
        "RANGE: the oldest and newest release of the matrix. RELEASES: per family, the releases on which",
        "all its parity tests passed. FINGERPRINTS: per rule (family/kind), its fingerprints",
        "(vlmops.transformers.patch.fingerprint) on those releases, each with the releases that have it.",
        "SOURCES: per guarded function, the sha256 of its source on those releases, likewise.",
        '"""',
        "",
        f"RANGE = ({_q(tested[0])}, {_q(tested[-1])})" if tested else "RANGE = ()",
        "",
        "RELEASES = {",
        *(line for family, items in releases.items() for line in _entry(family, items, indent=4)),
        "}",
        "",
        "FINGERPRINTS = {",
    ]
    for key in sorted(rule_prints):
        lines.append(f"    {_q(key)}: {{")
        lines += [line for sha, tags in rule_prints[key].items() for line in _entry(sha, tags)]
        lines.append("    },")
    lines += ["}", "", "SOURCES = {"]
    for spec in sorted(sources):
        lines.append(f"    {_q(spec)}: {{")
        lines += [line for sha, tags in sources[spec].items() for line in _entry(sha, tags)]
        lines.append("    },")
    lines += ["}", ""]
    return _ruff_format("\n".join(lines))


def _q(text: str) -> str:
    return json.dumps(text)


def _tuple(items) -> str:
    return "(" + ", ".join(_q(item) for item in items) + ("," if len(items) == 1 else "") + ")"


def _entry(key: str, releases, indent: int = 8) -> list:
    """The lines of ``"key": (releases),`` in a dict of verified.py, wrapped at 120 columns."""
    pad = " " * indent
    line = f"{pad}{_q(key)}: {_tuple(releases)},"
    if len(line) <= 120:
        return [line]
    rows, row = [], []
    for release in releases:
        if row and len(f"{pad}    " + ", ".join(_q(r) for r in [*row, release]) + ",") > 120:
            rows.append(row)
            row = []
        row.append(release)
    rows.append(row)
    return [f"{pad}{_q(key)}: (", *(f"{pad}    " + ", ".join(_q(r) for r in row) + "," for row in rows), f"{pad}),"]


def write_verified(results: dict) -> None:
    VERIFIED.write_text(verified_source(results))


def _ruff_format(source: str) -> str:
    """source in the project's format (``ruff format``, as ``make lint`` checks)."""
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--quiet", "--stdin-filename", str(VERIFIED), "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return formatted.stdout


SYMBOLS = {"verified": "✓", "failed": "✗", "absent": "—"}


def table(results: dict, outside: dict) -> str:
    """The family x release table (markdown) of the matrix, then that of the releases outside it."""
    releases = sorted(results, key=release_key)
    header = "| family | " + " | ".join(f"{r}<br>{results[r]['date']}" for r in releases) + " |"
    rows = [header, "|---|" + "---|" * len(releases)]
    for family in PARITY:
        cells = [SYMBOLS[results[r]["families"].get(family, "absent")] for r in releases]
        rows.append(f"| {family} | " + " | ".join(cells) + " |")
    legend = (
        f"✓ all parity tests pass (outputs, the vlmops ops ran, save/load), ✗ they do not, — the release "
        f"has no such model. Declared range: transformers {releases[0]} to {releases[-1]}."
    )
    text = "\n".join(rows) + "\n\n" + legend
    if outside:
        others = sorted(outside, key=release_key, reverse=True)
        rows = [
            "| family (verify=True) | " + " | ".join(f"{r}<br>{outside[r]['date']}" for r in others) + " |",
            "|---|" + "---|" * len(others),
        ]
        rows += [
            f"| {family} | " + " | ".join(_outside_cell(outside[r]["families"][family]) for r in others) + " |"
            for family in PARITY
        ]
        text += (
            "\n\nOutside the range, `patch_model(model, verify=True)` on the same models: the rules whose code"
            " matches a verified fingerprint are applied as is, the others are verified on the model and applied"
            " where they agree; the patched model matches the unpatched one in every case"
            " (`tests/test_compat_verify.py`).\n\n" + "\n".join(rows)
        )
    return text


def write_readme(results: dict, outside: dict) -> None:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise RuntimeError(f"README.md has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{table(results, outside)}\n{END}{tail}")


def load_results() -> tuple[dict, dict]:
    """(the matrix's results per release, the verify=True results per release outside the range)."""
    recorded = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    return recorded.get("matrix", {}), recorded.get("outside", {})


def check(releases) -> int:
    """CI: the parity tests of every family recorded as verified on each release, against the committed
    verified.py. Returns the number of families that failed."""
    recorded, _ = load_results()
    failures = 0
    for release in releases:
        started = time.monotonic()
        if release not in recorded:
            print(f"transformers {release}: not in {RESULTS.relative_to(ROOT)}; run the matrix first")
            failures += 1
            continue
        families = [f for f, status in recorded[release]["families"].items() if status == "verified"]
        folder = install(release)
        outcomes = run_parity(folder, families, trust=False)
        failed = [f for f in families if any(outcomes[node] != "passed" for node in PARITY[f])]
        failures += len(failed)
        print(
            f"transformers {release}: {len(families) - len(failed)} of {len(families)} verified families pass"
            + (f"; failed: {', '.join(failed)}" if failed else "")
            + f" ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("releases", nargs="*", help=f"releases to run (default: {' '.join(RELEASES)})")
    parser.add_argument("--check", action="store_true", help="CI: test against the committed fingerprints")
    parser.add_argument(
        "--ci-releases",
        action="store_true",
        help="print the releases CI checks (the oldest and newest of the matrix) and exit",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help=f"rewrite verified.py and README's table from {RESULTS.name} without running anything",
    )
    parser.add_argument("--fingerprints-to", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fingerprints_to:
        _dump_fingerprints(args.fingerprints_to)
        return 0
    if args.ci_releases:
        print(" ".join(ci_releases()))
        return 0
    if args.check:
        return 1 if check(args.releases or list(RELEASES)) else 0
    if args.render:
        results, outside = load_results()
        write_verified(results)
        write_readme(results, outside)
        return 0
    started = time.monotonic()
    results, outside = load_results()
    releases = [r for r in args.releases if r not in OUTSIDE] if args.releases else list(RELEASES)
    results.update(matrix(releases))
    outside.update(verify_outside([r for r in args.releases if r in OUTSIDE] if args.releases else OUTSIDE))
    recorded = {
        "matrix": {r: results[r] for r in sorted(results, key=release_key)},
        "outside": {r: outside[r] for r in sorted(outside, key=release_key)},
    }
    RESULTS.write_text(json.dumps(recorded, indent=1, ensure_ascii=False) + "\n")
    write_verified(results)
    write_readme(results, outside)
    print(table(results, outside))
    print(
        f"compatibility matrix: {len(releases)} releases and {len(outside)} outside the range in "
        f"{time.monotonic() - started:.0f} s ({datetime.date.today()})"
    )
    failed = [(r, f) for r in releases for f, s in results[r]["families"].items() if s == "failed"]
    failed += [(r, f) for r in outside for f, e in outside[r]["families"].items() if e["outcome"] != "passed"]
    return 1 if failed else 0


def ci_releases() -> tuple[str, str]:
    releases = sorted(RELEASES, key=release_key)
    return releases[0], releases[-1]


if __name__ == "__main__":
    sys.exit(main())
