"""Project-level promises: pinned environment, README == CI == reality, valid compose file."""

import json
import re
from pathlib import Path

import jsonschema
import yaml

from config.settings import REPO_ROOT, describe

SHARED = REPO_ROOT.parent / "shared"


def _requirement_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith(("#", "-"))]


def test_every_requirement_is_pinned():
    for name in ("requirements.txt", "requirements-dev.txt"):
        lines = _requirement_lines(REPO_ROOT / name)
        assert lines, name
        unpinned = [ln for ln in lines if not re.match(r"^[A-Za-z0-9_.\-\[\],]+==[^=\s]+", ln)]
        assert not unpinned, f"{name} has unpinned lines: {unpinned[:5]}"


def test_required_stack_is_in_the_lock():
    pins = {ln.split("==")[0].lower(): ln.split("==")[1] for ln in _requirement_lines(REPO_ROOT / "requirements.txt")}
    for pkg in ("feast", "apache-airflow", "mlflow", "great-expectations", "scikit-learn", "scipy", "pandas",
                "pyarrow", "redis", "fastapi", "uvicorn", "duckdb"):
        assert pkg in pins, pkg
    assert pins["apache-airflow"].startswith("3.3.")
    assert pins["mlflow"].startswith("3.")
    assert pins["great-expectations"].startswith("1.")


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make demo" in readme
    assert re.search(r"^make test\s*$", ci, re.M), "CI must run exactly the README's test command"


def test_readme_settings_table_matches_settings_module():
    readme = (REPO_ROOT / "README.md").read_text()
    for env, default, _ in describe():
        assert re.search(rf"\| `{re.escape(env)}` \| `{re.escape(default)}` \|", readme), f"{env} missing or stale"


def test_compose_file_is_valid_against_the_compose_spec():
    schema = json.loads((SHARED / "compose-spec.json").read_text())
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    jsonschema.validate(compose, schema)
    assert {"redis", "postgres"} <= set(compose["services"])
    for svc in compose["services"].values():
        assert "healthcheck" in svc
        # Ports bind to loopback only, and no secret is written into the file.
        assert all(str(p).startswith("127.0.0.1:") for p in svc.get("ports", []))
        # Secrets come from the environment (${VAR}), never written into the file.
        for key, value in (svc.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert str(value).startswith("${"), f"{key} is hard-coded"


def test_readme_has_no_placeholders_and_documents_what_exists():
    readme = (REPO_ROOT / "README.md").read_text()
    assert not re.search(r"\b[A-Z]{3,}_(SECTION|TIME|TABLE|MINUTES)\b", readme), "unfilled README placeholder"
    # Every path the README links to exists.
    for target in re.findall(r"\]\(((?!https?:|#)[^)]+)\)", readme):
        assert (REPO_ROOT / target).exists(), f"README links to missing {target}"
    # Every package the layout table names has a CLI that answers --help.
    for pkg in re.findall(r"`python -m (\w+) --help`", readme):
        assert (REPO_ROOT / pkg / "__main__.py").is_file(), pkg


def test_postgres_driver_of_the_production_shape_is_a_runtime_dependency():
    """README (Production shape) points the Feast registry and MLflow at postgresql+psycopg2:// URLs."""
    assert "postgresql+psycopg2://" in (REPO_ROOT / "README.md").read_text()
    runtime = {ln.split("==")[0].lower() for ln in _requirement_lines(REPO_ROOT / "requirements.txt")}
    assert "psycopg2-binary" in runtime, "psycopg2-binary must be in requirements.txt, not only in the dev lock"
    direct = {ln.strip().lower() for ln in (REPO_ROOT / "requirements.in").read_text().splitlines()}
    assert "psycopg2-binary" in direct


def test_compose_variables_are_documented_in_the_readme():
    readme = (REPO_ROOT / "README.md").read_text()
    used = set(re.findall(r"\$\{(PM_[A-Z_]+)", (REPO_ROOT / "docker-compose.yml").read_text()))
    assert {"PM_POSTGRES_PASSWORD", "PM_POSTGRES_USER", "PM_POSTGRES_DB", "PM_POSTGRES_PORT"} <= used
    for var in used:
        assert f"`{var}`" in readme, f"{var} (docker-compose.yml) is not documented in README.md"
