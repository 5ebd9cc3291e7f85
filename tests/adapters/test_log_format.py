"""``--log-format``: one JSON object a line (or text), and no secret in either."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from hyco_adapters.log_format import JsonFormatter, TextFormatter, redact_secrets
from tests.cli import hyco_relay, lines_of, start_hyco, stop

SIGNATURE = "c2lnbmF0dXJlLXRoYXQtbXVzdC1ub3QtbGVhaw%3D%3D"
KEY = "a2V5LXRoYXQtbXVzdC1ub3QtbGVhaw=="
TOKEN_URL = (
    "wss://ns.example/$hc/hc1?sb-hc-action=listen&sb-hc-token=SharedAccessSignature%20sr%3Dx"
    f"%26sig%3D{SIGNATURE}%26se%3D1&sb-hc-id=7"
)
TOKEN = f"SharedAccessSignature sr=sb%3A%2F%2Fns%2Fhc1&sig={SIGNATURE}&se=1700000000&skn=root"
CONNECTION_STRING = (
    f"Endpoint=sb://ns.example/;SharedAccessKeyName=root;SharedAccessKey={KEY};EntityPath=hc1"
)
SIGNATURE_STRING = f"Endpoint=sb://ns.example/;SharedAccessSignature={TOKEN};EntityPath=hc1"


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.getLogger("hyco.test").makeRecord(
        "hyco.test", logging.WARNING, __file__, 1, message, args, None, extra=extra
    )
    return made


def secret_free(text: str) -> None:
    assert SIGNATURE not in text
    assert SIGNATURE.replace("%3D", "=") not in text
    assert KEY not in text


def test_a_json_line_has_the_fields_and_no_secret() -> None:
    try:
        raise ValueError(f"could not open {TOKEN_URL} with {CONNECTION_STRING}")
    except ValueError:
        exc_info = sys.exc_info()
    line = record("connecting to %s with %s", TOKEN_URL, CONNECTION_STRING, peer=TOKEN, tries=3)
    line.exc_info = exc_info
    text = JsonFormatter().format(line)
    assert "\n" not in text
    document = json.loads(text)
    assert document["level"] == "WARNING"
    assert document["logger"] == "hyco.test"
    moment = datetime.fromisoformat(document["time"].replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0)
    assert document["message"].startswith("connecting to wss://ns.example/$hc/hc1?")
    assert "sb-hc-token=***" in document["message"]
    assert "SharedAccessKey=***" in document["message"]
    assert "ValueError" in document["exception"]
    assert document["tries"] == 3
    assert "sig=***" in document["peer"]
    assert document["process"] > 0
    secret_free(text)


@pytest.mark.parametrize("secret", [TOKEN_URL, TOKEN, CONNECTION_STRING, SIGNATURE_STRING])
def test_every_form_of_a_secret_is_hidden(secret: str) -> None:
    secret_free(redact_secrets(f"before {secret} after"))
    secret_free(redact_secrets(repr(secret)))
    secret_free(TextFormatter().format(record("%s", secret)))
    assert redact_secrets("nothing secret here: sb://ns/hc1") == "nothing secret here: sb://ns/hc1"


def test_the_command_writes_json_lines_only(tmp_path: Path) -> None:
    with hyco_relay(cwd=tmp_path) as relay:
        listen = start_hyco(
            "--log-format", "json", "-vv", "listen", "-c", relay.listener, cwd=tmp_path
        )
        try:
            assert lines_of(listen, 2) == ["listener connecting", "listener online"]
        finally:
            _out, err = stop(listen)
    lines = err.splitlines()
    assert lines
    documents = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(documents[0])
    assert any(doc["message"] == "listener hyco: online" for doc in documents), documents
    key = relay.listener.split("SharedAccessKey=", 1)[1].split(";", 1)[0]
    assert key not in err
    assert "sig=" not in err.replace("sig=***", "")
