"""SAP with the SAP Cloud SDK for JavaScript: its OData v2 client generator runs offline on SAP's
real `$metadata` documents (the fixtures), and the generated clients run unmodified against the
SAP simulator (sap-cloud-sdk/sap.test.ts). The npm packages are pinned in
sap-cloud-sdk/package-lock.json and installed with `npm ci` into the suite's work folder."""

import hashlib
import os
import pathlib
import shutil
import subprocess

import pytest

HERE = pathlib.Path(__file__).resolve().parent / "sap-cloud-sdk"
SERVICES = [
    "API_MATERIAL_STOCK_SRV",
    "API_PURCHASEORDER_PROCESS_SRV",
    "API_PURCHASEREQ_PROCESS_SRV",
    "API_OUTBOUND_DELIVERY_SRV",
]


def digest(*paths: pathlib.Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()


def run(cmd: list, cwd: pathlib.Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    return done


@pytest.fixture(scope="module")
def project(fixtures) -> pathlib.Path:
    work = pathlib.Path(os.environ.get("CONFORMANCE_WORK", HERE.parent.parent / "target" / "conformance"))
    project = work / "sap-cloud-sdk"
    project.mkdir(parents=True, exist_ok=True)
    lock = HERE / "package-lock.json"
    installed = project / ".lock-sum"
    if not installed.exists() or installed.read_text() != digest(lock):
        for name in ["package.json", "package-lock.json"]:
            shutil.copy(HERE / name, project / name)
        shutil.rmtree(project / "node_modules", ignore_errors=True)
        run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], project)
        installed.write_text(digest(lock))
    edmx = [fixtures / "sap" / f"{service}.metadata.xml" for service in SERVICES]
    generated = project / ".gen-sum"
    if not generated.exists() or generated.read_text() != digest(lock, *edmx):
        shutil.rmtree(project / "edmx", ignore_errors=True)
        (project / "edmx").mkdir()
        for service, source in zip(SERVICES, edmx):
            shutil.copy(source, project / "edmx" / f"{service}.edmx")
        run(["npx", "generate-odata-client", "--input", "edmx", "--outputDir", "gen", "--skipValidation", "--overwrite"], project)
        generated.write_text(digest(lock, *edmx))
    shutil.copy(HERE / "sap.test.ts", project / "sap.test.ts")
    return project


def test_sap_cloud_sdk_generated_clients_against_the_simulator(project, sap):
    env = {**os.environ, "SAP_SIM_URL": sap.base}
    done = subprocess.run(
        ["npx", "tsx", "--test", "--test-reporter=spec", "sap.test.ts"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    print(done.stdout[-8000:])
    assert done.returncode == 0, f"{done.stdout[-8000:]}\n{done.stderr[-4000:]}"
