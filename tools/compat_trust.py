"""pytest plugin of tools/compat_matrix.py: ``-p compat_trust`` (tools/ on the path)."""

import json


def pytest_addoption(parser):
    parser.addoption("--compat-report", default=None)
    parser.addoption("--compat-trust", action="store_true")


def pytest_configure(config):
    config._compat_outcomes = {}
    if config.getoption("--compat-trust"):
        trust_installed()


def trust_installed():
    """Adds the fingerprints of the installed transformers to the verified ones, for this process."""
    from vlmops.transformers import RULES, UnsupportedTransformersError, verified
    from vlmops.transformers.patch import fingerprint, select_rules

    for rule in select_rules(RULES):
        try:
            combined, sources = fingerprint(rule)
        except UnsupportedTransformersError:
            continue
        verified.FINGERPRINTS.setdefault(rule.key, {})[combined] = ("installed",)
        for spec, sha in sources.items():
            verified.SOURCES.setdefault(spec, {})[sha] = ("installed",)


def pytest_runtest_logreport(report):
    pass


def pytest_report_teststatus(report, config):
    outcomes = config._compat_outcomes
    if report.when == "call" or report.outcome != "passed":
        previous = outcomes.get(report.nodeid)
        if previous in (None, "passed"):
            outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session):
    path = session.config.getoption("--compat-report")
    if path:
        with open(path, "w") as f:
            json.dump(session.config._compat_outcomes, f, indent=1)
