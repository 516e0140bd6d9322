"""pytest plugin of tools/compat_matrix.py, loaded with ``-p compat_trust`` (tools/ on the path).

``--compat-trust``: the fingerprints of the installed transformers count as verified for this run
(vlmops.transformers.verified is extended in this process only), so the parity tests say whether
the patches are right on it; the matrix records them as verified only where they pass.
``--compat-report PATH``: writes {"outcomes": {node id: "passed" | "failed" | "skipped"},
"properties": {node id: the "verify" property the test recorded}} of the run to PATH.
"""

import json


def pytest_addoption(parser):
    parser.addoption("--compat-trust", action="store_true")
    parser.addoption("--compat-report", default=None)


# node id -> outcome of this run; node id -> the "verify" property a test recorded.
OUTCOMES, PROPERTIES = {}, {}


def pytest_configure(config):
    if config.getoption("--compat-trust"):
        trust_installed()


def trust_installed():
    """Adds the fingerprints of the rules patch_model selects with the installed transformers to the
    verified ones, tagged with its release."""
    import transformers

    from vlmops.transformers import RULES, UnsupportedTransformersError, verified
    from vlmops.transformers.patch import fingerprint, select_rules

    release = (transformers.__version__,)
    for rule in select_rules(RULES):
        try:
            combined, sources = fingerprint(rule)
        except UnsupportedTransformersError:  # missing code: the family's tests fail on the refusal
            continue
        verified.FINGERPRINTS.setdefault(rule.key, {})[combined] = release
        for spec, sha in sources.items():
            verified.SOURCES.setdefault(spec, {})[sha] = release


def pytest_runtest_logreport(report):
    """A test's outcome: its call's, or the first setup or teardown that did not pass."""
    first = OUTCOMES.get(report.nodeid, "passed") == "passed"
    if (report.when == "call" or report.outcome != "passed") and first:
        OUTCOMES[report.nodeid] = report.outcome
    for name, value in report.user_properties:
        if name == "verify":
            PROPERTIES[report.nodeid] = value


def pytest_sessionfinish(session):
    path = session.config.getoption("--compat-report")
    if path:
        with open(path, "w") as f:
            json.dump({"outcomes": OUTCOMES, "properties": PROPERTIES}, f, indent=1)
