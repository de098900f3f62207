"""The deployment files agree with the repository: the lock files, the Debian package list,
the Dockerfile and docker-compose.yml (Docker itself does not run here, so they are parsed).

- requirements*.lock pin every package with hashes, and hold the pins of requirements*.txt;
- the Dockerfile installs debian-packages.txt and requirements.lock (hash-checked), compiles
  translations, collects static files and runs gunicorn as an unprivileged user;
- docker-compose.yml sets only documented settings, every setting production needs, and runs
  real modules, health paths and ports.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.urls import Resolver404, resolve

ROOT = Path(__file__).resolve().parents[2]

# The settings production cannot go without (DEBUG=0): no default, or a default that is only
# right for the embedded SQLite-without-Redis setup.
PRODUCTION_SETTINGS = {"SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"}
# What WeasyPrint (invoice PDFs) and the Chinese UI need in the image.
IMAGE_PACKAGES = {"libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz0b", "libfontconfig1", "fonts-wqy-microhei"}
ROLES = {"runtime", "build", "test"}
# Never in the locks: GPU stacks that litellm's or tokenizers' optional extras could pull in.
HUGE_PACKAGES = re.compile(r"^(torch|torchvision|torchaudio|triton|tensorflow|jax|nvidia-.*|cuda-.*)$")


# --- parsers --------------------------------------------------------------------------------


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins(path: Path) -> dict[str, str]:
    """name -> version of the `name==version` lines of a requirements file (not its -r files)."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        assert match, f"{path.name}: {raw!r} is not pinned with =="
        pins[normalize(match[1])] = match[3]
    return pins


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile lock file."""
    entries = {}
    for line in re.sub(r"\\\n", " ", path.read_text()).splitlines():  # continuation lines joined
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", requirement)
        assert match, f"{path.name}: {line.strip()!r} is not `name==version` (no URLs, editables, markers)"
        assert all(option.startswith("--hash=") for option in options), f"{path.name}: {requirement}: {options}"
        entries[normalize(match[1])] = (match[2], [option.removeprefix("--hash=") for option in options])
    return entries


def debian_packages() -> dict[str, str]:
    """package -> role, from debian-packages.txt (comment lines and trailing comments ignored)."""
    packages = {}
    for raw in (ROOT / "debian-packages.txt").read_text().splitlines():
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        assert len(fields) == 2, f"debian-packages.txt: {raw!r} is not `package role`"
        assert fields[1] in ROLES, f"debian-packages.txt: {fields[0]} has an unknown role {fields[1]!r}"
        packages[fields[0]] = fields[1]
    return packages


def dockerfile_stages(text: str) -> list[dict]:
    """The Dockerfile's stages, each {"from": image, "name": alias, "instructions": [(INSTR, args)]}."""
    stages: list[dict] = []
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    for line in logical.splitlines():
        if not line.strip():
            continue
        instruction, _, args = line.strip().partition(" ")
        instruction, args = instruction.upper(), " ".join(args.split())
        if instruction == "FROM":
            image, _, alias = args.partition(" AS ")
            if not alias:
                image, _, alias = args.partition(" as ")
            stages.append({"from": image.strip(), "name": alias.strip(), "instructions": []})
        else:
            assert stages, f"Dockerfile: {instruction} before FROM"
            stages[-1]["instructions"].append((instruction, args))
    return stages


def stage_chain(stages: list[dict], stage: dict) -> list[dict]:
    """The stage and the stages it is built FROM, base first."""
    by_name = {candidate["name"]: candidate for candidate in stages if candidate["name"]}
    chain = [stage]
    while chain[0]["from"] in by_name:
        chain.insert(0, by_name[chain[0]["from"]])
    return chain


def instructions(chain: list[dict], name: str) -> list[str]:
    return [args for stage in chain for instruction, args in stage["instructions"] if instruction == name]


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def app_services() -> dict[str, dict]:
    """The services that run this repository's image."""
    services = compose()["services"]
    return {name: service for name, service in services.items() if "build" in service}


def documented_settings() -> dict[str, str]:
    """Setting -> its comment in .env.example."""
    settings = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"([A-Z][A-Z0-9_]*)=[^#]*(?:#(.*))?", line)
        if match:
            settings[match[1]] = match[2] or ""
    return settings


def interpolate(value: str, environment: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR-default} interpolation."""

    def substitute(match: re.Match) -> str:
        name, operator, default = match[1], match[2] or "", match[3] or ""
        if name in environment and (environment[name] or operator != ":-"):
            return environment[name]
        return default

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-)?([^}]*)\}", substitute, str(value))


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else shlex.split(command)


# --- lock files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "lock"), [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")]
)
def test_every_lock_pins_each_package_with_hashes_and_holds_the_top_level_pins(source, lock):
    entries = lock_entries(ROOT / lock)
    assert len(entries) > 50, f"{lock} holds the whole tree, transitive packages included"
    unhashed = sorted(name for name, (_version, hashes) in entries.items() if not hashes)
    assert not unhashed, f"{lock}: pins without --hash (pip --require-hashes refuses them): {unhashed}"
    for name, (_version, hashes) in entries.items():
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", digest) for digest in hashes), name
    pins = requirement_pins(ROOT / source)
    if source == "requirements-dev.txt":
        pins |= requirement_pins(ROOT / "requirements.txt")
    stale = {name: (version, entries.get(name, ("missing",))[0]) for name, version in pins.items()}
    stale = {name: versions for name, versions in stale.items() if versions[0] != versions[1]}
    assert not stale, f"{source} and {lock} disagree (run `make lock`): {stale}"
    huge = sorted(name for name in entries if HUGE_PACKAGES.match(name))
    assert not huge, f"{lock} pulls in {huge}"


def test_the_dev_lock_installs_the_same_runtime_packages_as_the_image():
    runtime, dev = lock_entries(ROOT / "requirements.lock"), lock_entries(ROOT / "requirements-dev.lock")
    differing = {
        name: (version, dev.get(name, ("missing",))[0])
        for name, (version, _hashes) in runtime.items()
        if dev.get(name, ("missing",))[0] != version
    }
    assert not differing, f"requirements.lock vs requirements-dev.lock: {differing}"


def test_the_makefile_installs_from_the_locks_with_hashes():
    makefile = (ROOT / "Makefile").read_text()
    for stamp, lock in [(".runtime-installed", "requirements.lock"), (".dev-installed", "requirements-dev.lock")]:
        rule = re.search(rf"^\$\(VENV\)/{re.escape(stamp)}:(.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
        assert rule, f"Makefile: no rule for $(VENV)/{stamp}"
        assert lock in rule[1].split(), f"$(VENV)/{stamp} must be rebuilt when {lock} changes"
        assert f"--require-hashes -r {lock}" in rule[2], f"$(VENV)/{stamp} must install {lock} with --require-hashes"
    assert re.search(r"^lock:", makefile, re.MULTILINE), "`make lock` regenerates the lock files"
    assert "--generate-hashes" in makefile


# --- Debian packages ------------------------------------------------------------------------


def test_the_debian_list_holds_what_pdfs_translations_and_browser_tests_need():
    packages = debian_packages()
    missing = sorted(IMAGE_PACKAGES - {name for name, role in packages.items() if role == "runtime"})
    assert not missing, f"debian-packages.txt: the image needs {missing} (role runtime)"
    assert packages.get("gettext") == "build", "compilemessages needs gettext (msgfmt) at build time"
    assert packages.get("chromium") == "test", "the browser tests need chromium"


def test_every_debian_package_exists():
    apt_cache = shutil.which("apt-cache")
    if not apt_cache or not any(Path("/var/lib/apt/lists").glob("*_Packages*")):
        pytest.skip("no Debian package lists here (apt-get update)")
    packages = sorted(debian_packages())
    found = subprocess.run(
        [apt_cache, "show", "--no-all-versions", *packages], capture_output=True, text=True, check=False, timeout=300
    )
    known = set(re.findall(r"^Package: (\S+)$", found.stdout, re.MULTILINE))
    assert not set(packages) - known, f"debian-packages.txt: Debian has no package {sorted(set(packages) - known)}"


def test_the_makefile_reads_the_debian_list():
    makefile = (ROOT / "Makefile").read_text()
    makefile = "\n".join(line for line in makefile.splitlines() if not line.startswith("#"))  # comments may name them
    assert "debian-packages.txt" in makefile
    hardcoded = sorted(
        name for name in debian_packages() if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", makefile)
    )
    assert not hardcoded, f"Makefile names {hardcoded} itself: take them from debian-packages.txt"


# --- Dockerfile -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile():
    stages = dockerfile_stages((ROOT / "Dockerfile").read_text())
    return {"stages": stages, "final": stage_chain(stages, stages[-1]), "all": stages}


def apt_roles(chain: list[dict]) -> set[str]:
    """The debian-packages.txt roles this chain of stages installs."""
    roles = set()
    copied = any("debian-packages.txt" in args for args in instructions(chain, "COPY"))
    for run in instructions(chain, "RUN"):
        if "apt-get install" in run and "debian-packages.txt" in run:
            assert copied, "the Dockerfile reads debian-packages.txt without copying it in"
            roles |= set(re.findall(r"\$2 == \"(\w+)\"", run))
    return roles


def test_the_image_is_python_311_on_the_debian_release_of_the_package_list(dockerfile):
    bases = {stage["from"] for stage in dockerfile["stages"]} - {stage["name"] for stage in dockerfile["stages"]}
    assert bases == {"python:3.11-slim-bookworm"}
    assert "Debian (bookworm)" in (ROOT / "debian-packages.txt").read_text()


def test_the_image_installs_the_runtime_debian_packages(dockerfile):
    assert "runtime" in apt_roles(dockerfile["final"]), "the image lacks debian-packages.txt's runtime packages"
    assert "test" not in apt_roles(dockerfile["final"]), "the browser tests' chromium has no place in the image"


def test_the_image_installs_the_lock_with_hashes(dockerfile):
    installs = [run for run in instructions(dockerfile["final"] + dockerfile["all"], "RUN") if "pip install" in run]
    assert installs, "the Dockerfile installs no Python packages"
    for run in installs:
        assert "--require-hashes -r " in run, f"pip install without --require-hashes: {run}"
        assert re.search(r"-r \S*requirements\.lock\b", run), f"the image installs from requirements.lock: {run}"
    assert any("requirements.lock" in args for args in instructions(dockerfile["all"], "COPY"))


def build_steps(dockerfile) -> tuple[dict, list[str]]:
    """The stage that compiles the application, and its RUN steps after `COPY . .`."""
    for stage in dockerfile["all"]:
        steps = stage["instructions"]
        if ("COPY", ". .") in steps:
            after = steps[steps.index(("COPY", ". .")) :]
            return stage, [args for instruction, args in after if instruction == "RUN"]
    pytest.fail("the Dockerfile never copies the application (COPY . .)")
    return {}, []


def test_the_image_compiles_translations_and_collects_static_files(dockerfile):
    stage, runs = build_steps(dockerfile)
    assert any("manage.py compilemessages" in run for run in runs), "*.mo files are not committed: compile them"
    assert any("manage.py collectstatic" in run for run in runs)
    assert "build" in apt_roles(stage_chain(dockerfile["all"], stage)), "compilemessages needs gettext"
    if stage is not dockerfile["stages"][-1]:  # a build stage: the image copies its results
        copied = " ".join(instructions(dockerfile["final"], "COPY"))
        assert f"--from={stage['name']} /app" in copied, "the image lacks the compiled application"
        assert f"--from={stage['name']} /opt/venv" in copied, "the image lacks the installed packages"


def test_the_image_runs_gunicorn_as_an_unprivileged_user(dockerfile):
    users = instructions(dockerfile["final"], "USER")
    assert users, "the image runs as root"
    assert users[-1] not in {"root", "0"}
    assert any("useradd" in run and users[-1] in run for run in instructions(dockerfile["final"], "RUN"))
    cmd = instructions(dockerfile["final"], "CMD")[-1]
    assert exec_form(cmd) == ["gunicorn", "portal.wsgi:application", "-c", "gunicorn.conf.py"]


# --- docker-compose.yml -------------------------------------------------------------------


def test_compose_sets_only_documented_settings_and_every_one_production_needs():
    documented = documented_settings()
    required = PRODUCTION_SETTINGS | {setting for setting, comment in documented.items() if "required" in comment}
    assert set(documented) >= required
    for name, service in app_services().items():
        environment = service.get("environment", {})
        undocumented = sorted(set(environment) - set(documented))
        assert not undocumented, f"compose `{name}` sets {undocumented}: not settings in .env.example"
        missing = sorted(required - set(environment))
        assert not missing, f"compose `{name}` neither sets nor passes through {missing}"
        secret = str(environment["SECRET_KEY"])
        assert re.fullmatch(r"\$\{SECRET_KEY(:?-)?\}", secret), "SECRET_KEY: passed through, never a default"


def test_the_image_sets_no_undocumented_setting(dockerfile):
    tooling = re.compile(r"^(PYTHON\w+|PIP_\w+|PATH|VIRTUAL_ENV|LANG|LC_ALL)$")
    for args in instructions(dockerfile["all"], "ENV"):
        for name in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", args):
            assert tooling.match(name) or name in documented_settings(), f"Dockerfile sets {name}: not in .env.example"


def test_compose_environments_make_a_valid_production_configuration(tmp_path):
    """Django starts (DEBUG off) in the environment compose gives each service, the operator's
    SECRET_KEY added; without a SECRET_KEY it refuses to."""
    base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    base |= {"DJANGO_SETTINGS_MODULE": "portal.settings", "PYTHONPATH": str(ROOT)}
    probe = "import django; django.setup(); from django.conf import settings; print('DEBUG', settings.DEBUG)"
    runs: dict[str, tuple[dict, subprocess.Popen]] = {}
    for name, service in app_services().items():
        environment = {
            key: interpolate(value, {"SECRET_KEY": "s" * 50}) for key, value in service["environment"].items()
        }
        if "PROMETHEUS_MULTIPROC_DIR" in environment:
            environment["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)  # gunicorn.conf.py makes it at start-up
        without_secret = {**environment, "SECRET_KEY": interpolate(service["environment"]["SECRET_KEY"], {})}
        for label, env in [(name, environment), (f"{name} without SECRET_KEY", without_secret)]:
            if any(env == seen for seen, _ in runs.values()):
                continue  # services sharing one environment (x-app) are probed once
            process = subprocess.Popen(
                [sys.executable, "-c", probe],
                cwd=tmp_path,  # no .env is read
                env={**base, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            runs[label] = (env, process)
    results = {label: (process.communicate(timeout=180), process.returncode) for label, (_, process) in runs.items()}
    for label, ((stdout, stderr), returncode) in results.items():
        if label.endswith("without SECRET_KEY"):
            assert returncode != 0 and "SECRET_KEY must be set" in stderr, f"{label}: {stdout}"
        else:
            assert returncode == 0, f"{label}: {stderr[-2000:]}"
            assert "DEBUG False" in stdout, label


def test_compose_services_run_real_modules():
    services = app_services()
    assert set(services) >= {"migrate", "web", "worker", "beat"}
    assert command_of(services["migrate"])[:3] == ["python", "manage.py", "migrate"]
    web = command_of(services["web"])
    assert web[:2] == ["gunicorn", "portal.wsgi:application"]
    assert web[web.index("-c") + 1] == "gunicorn.conf.py" and (ROOT / "gunicorn.conf.py").is_file()
    assert "application = " in (ROOT / "portal" / "wsgi.py").read_text()
    for name, role in [("worker", "worker"), ("beat", "beat")]:
        command = command_of(services[name])
        assert command[:4] == ["celery", "-A", "portal", role], f"compose `{name}`: {command}"
    # `celery -A portal` finds the app that portal/__init__.py exports from portal/celery.py.
    assert "from portal.celery import app as celery_app" in (ROOT / "portal" / "__init__.py").read_text()
    assert re.search(r"^app = Celery\(", (ROOT / "portal" / "celery.py").read_text(), re.MULTILINE)
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
    assert services["migrate"]["restart"] == "no", "a one-shot; restarting it would migrate forever"


def test_only_gunicorn_shares_a_prometheus_multiprocess_directory():
    """gunicorn.conf.py creates PROMETHEUS_MULTIPROC_DIR; any other process given a directory
    that does not exist fails at import (prometheus_client opens its files there)."""
    for name, service in app_services().items():
        if "PROMETHEUS_MULTIPROC_DIR" in service.get("environment", {}):
            assert command_of(service)[0] == "gunicorn", f"compose `{name}` would crash at start-up"


def test_compose_health_checks_probe_real_paths_with_an_allowed_host():
    checked = 0
    for name, service in app_services().items():
        test = service.get("healthcheck", {}).get("test")
        if not test:
            continue
        script = " ".join(test)
        for path in re.findall(r"http://127\.0\.0\.1:\d+(/[\w/.-]*)", script):
            try:
                resolve(path)
            except Resolver404:
                pytest.fail(f"compose `{name}` health check probes {path}, which portal/urls.py lacks")
            checked += 1
        assert "ALLOWED_HOSTS" in script, f"compose `{name}`: with a real ALLOWED_HOSTS, Host 127.0.0.1 gets 400"
        compile(test[-1], "healthcheck", "exec")
    assert checked
    for path in ("/healthz", "/readyz"):
        assert resolve(path).url_name in {"healthz", "readyz"}


def test_ports_agree(dockerfile):
    gunicorn_conf = (ROOT / "gunicorn.conf.py").read_text()
    bind_port = re.search(r'"GUNICORN_BIND", "[\d.]+:(\d+)"', gunicorn_conf)[1]
    env_example = re.search(r"^GUNICORN_BIND=[\d.]+:(\d+)", (ROOT / ".env.example").read_text(), re.MULTILINE)[1]
    exposed = {port.split("/")[0] for port in instructions(dockerfile["final"], "EXPOSE")}
    web = app_services()["web"]
    container_ports = {str(mapping).rsplit(":", 1)[-1] for mapping in web["ports"]}
    health_ports = set(re.findall(r"http://127\.0\.0\.1:(\d+)/", " ".join(web["healthcheck"]["test"])))
    assert {env_example} | exposed | container_ports | health_ports == {bind_port}


def test_the_build_context_leaves_out_secrets_and_local_state():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env", ".git", ".venv", "db.sqlite3", "staticfiles"} <= ignored
