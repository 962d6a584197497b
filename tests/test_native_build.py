"""The native decoder is optional: without a compiler the package still builds and
installs, says why, and otel-ai runs on the Python reference decoder."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_build_without_a_compiler_succeeds_with_a_warning(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "*.so",
                                                                "__pycache__", "tests", "otel-ai-data"))
    env = {**os.environ, "CC": "/bin/false", "LDSHARED": "/bin/false"}  # a compiler that always fails
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(source)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "the native OTLP decoder was not built" in done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("otel_ai-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "otel_ai/decode/reference.py" in names
    assert not [n for n in names if n.endswith(".so")]


def test_without_the_extension_the_reference_decoder_serves() -> None:
    program = (
        "import sys; sys.modules['otel_ai.decode._otlp'] = None\n"  # the import now fails, as when not built
        "from otel_ai.decode import Decoder, describe\n"
        "from otel_ai.subjects import SubjectTable\n"
        "from otel_ai.testing.scenarios import scenario\n"
        "decoder = Decoder(SubjectTable())\n"
        "body = next(iter(scenario('bad_pod', warmup_s=5, rate_scale=0.1).serialized_batches(2)))\n"
        "print(describe()); print(decoder.protobuf.name, len(decoder.decode(body, None)) > 0)\n"
        "print(decoder.json.name)\n"
        # the whole pipeline, the service graph's parent lookup included, runs on numpy alone
        "import tempfile, pathlib\n"
        "from otel_ai.config import load_settings\n"
        "from otel_ai.pipeline import Pipeline\n"
        "from otel_ai.store import IncidentStore\n"
        "from otel_ai.decode import native\n"
        "store = IncidentStore(pathlib.Path(tempfile.mkdtemp()) / 'i.db')\n"
        "pipeline = Pipeline(load_settings(env={}), store, [], use_wall_clock=False)\n"
        "for body in scenario('bad_pod', warmup_s=5, rate_scale=0.1).serialized_batches(30):\n"
        "    pipeline.feed(body)\n"
        "print(native.find_rows(None, None, 1) is None, pipeline.ticks > 0, len(pipeline.graph.components) > 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("python reference (the C extension is not built")
    assert lines[1] == "python True"
    assert lines[0].endswith("OTLP/JSON: the direct Python reader") and lines[2] == "json"
    assert lines[3] == "True True True"
