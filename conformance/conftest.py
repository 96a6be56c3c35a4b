"""Shared fixtures of the conformance scripts: where each simulator listens, its test
credentials (`GET /_sim/info`), a reset to its seed before each script, and its request journal.

The scripts talk to the simulators only through the vendors' client libraries, redirected by the
libraries' own configuration (base URL, endpoint, authority, or an HTTP adapter that maps the
vendor host to the simulator). This file only uses the `/_sim/` control API."""

import json
import os
import pathlib

import pytest
import requests


def fixtures_dir() -> pathlib.Path:
    """`$DINGBRIDGE_FIXTURES`, else the first `shared/fixtures` above this folder (as the Rust tests)."""
    env = os.environ.get("DINGBRIDGE_FIXTURES")
    if env:
        return pathlib.Path(env)
    here = pathlib.Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "fixtures"
        if candidate.is_dir():
            return candidate
    raise RuntimeError("no shared/fixtures above conformance/; set DINGBRIDGE_FIXTURES")


class Simulator:
    """One running simulator: its base URL and its `/_sim/` control API."""

    def __init__(self, name: str, base: str):
        self.name = name
        self.base = base.rstrip("/")
        self.host_port = self.base.split("://", 1)[1]

    def url(self, path: str) -> str:
        return self.base + path

    def info(self) -> dict:
        answer = requests.get(self.url("/_sim/info"), timeout=10)
        answer.raise_for_status()
        return answer.json()["info"]

    def reset(self) -> None:
        requests.post(self.url("/_sim/reset"), timeout=10).raise_for_status()

    def requests(self, path_prefix: str | None = None) -> list:
        params = {"path_prefix": path_prefix} if path_prefix else {}
        answer = requests.get(self.url("/_sim/requests"), params=params, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def faults(self, **spec) -> None:
        requests.post(self.url("/_sim/faults"), json=spec, timeout=10).raise_for_status()

    def clear_faults(self) -> None:
        requests.delete(self.url("/_sim/faults"), timeout=10).raise_for_status()

    def put_record(self, entity: str, record: dict) -> dict:
        answer = requests.post(self.url(f"/_sim/records/{entity}"), json=record, timeout=10)
        answer.raise_for_status()
        return answer.json() if answer.content else {}


def _endpoints() -> dict:
    path = os.environ.get("DINGBRIDGE_SIM_ENDPOINTS")
    if not path:
        raise RuntimeError("DINGBRIDGE_SIM_ENDPOINTS is not set: run the suite with conformance/run")
    return json.loads(pathlib.Path(path).read_text())


def simulator(name: str) -> Simulator:
    return Simulator(name, _endpoints()[name])


@pytest.fixture(scope="session")
def fixtures() -> pathlib.Path:
    return fixtures_dir()


SIMULATORS = ["dingtalk", "salesforce", "zoho", "netsuite", "dynamics", "sap"]


def _simulator_fixture(name: str):
    """A module-scoped fixture named after the simulator: reset to its seed, faults cleared after."""

    @pytest.fixture(scope="module", name=name)
    def fresh():
        sim = simulator(name)
        sim.reset()
        yield sim
        sim.clear_faults()

    return fresh


for _name in SIMULATORS:
    globals()[_name] = _simulator_fixture(_name)


class HostRouter(requests.adapters.HTTPAdapter):
    """A `requests` transport adapter that sends what a client addresses to a vendor host
    (`https://org.crm.dynamics.com/...`) to the simulator that plays it (`http://127.0.0.1:PORT/...`),
    path and query untouched. It is how clients that insist on the vendor's https URL (Dataverse,
    msal, simple-salesforce's login) are pointed at `dingbridge sim` without changing them."""

    def __init__(self, routes: dict, keep_host: bool = True):
        super().__init__()
        self.routes = {host.lower(): base.rstrip("/") for host, base in routes.items()}
        self.keep_host = keep_host

    def send(self, request, **kwargs):
        scheme, rest = request.url.split("://", 1)
        host, _, tail = rest.partition("/")
        target = self.routes.get(host.lower())
        if target is not None:
            request.url = f"{target}/{tail}"
            # The simulator sees the vendor's Host, as the real service would, and answers with
            # the vendor's https origin in its links (`sim::origin`).
            request.headers["Host"] = host if self.keep_host else target.split("://", 1)[1]
        return super().send(request, **kwargs)


def route_hosts(monkeypatch, routes: dict, keep_host: bool = True) -> HostRouter:
    """Every `requests.Session` made while the test runs (the clients' own included) sends the
    given vendor hosts to their simulators; other hosts are untouched (and unreachable here)."""
    router = HostRouter(routes, keep_host)
    original_init = requests.Session.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        for host in router.routes:
            self.mount(f"https://{host}/", router)
            self.mount(f"http://{host}/", router)

    monkeypatch.setattr(requests.Session, "__init__", init)
    return router
