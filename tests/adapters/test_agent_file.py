"""The agent's file: entries read whole, ``${NAME}`` from the environment, and every mistake
named with its line and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyco_adapters.agent_file import (
    ExposeEntry,
    ForwardEntry,
    ServeEntry,
    load_agent_config,
    parse_agent_config,
)
from hyco_adapters.forward import Target
from hyco_relay.config import ConfigError

KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY="
CS = (
    "Endpoint=sb://127.0.0.1:9090/;SharedAccessKeyName=RootManageSharedAccessKey;"
    f"SharedAccessKey={KEY};EntityPath=hc1;UseDevelopmentEmulator=true"
)
ENV = {"HC1": CS, "OTHER": CS.replace("EntityPath=hc1", "EntityPath=hc2")}

FOUR = """\
# four tunnels
[[expose]]
connection_string = "${HC1}"
targets = ["ssh=127.0.0.1:22", "127.0.0.1:5432"]

[[expose]]
name = "web"
connection_string = "${OTHER}"
http = "http://127.0.0.1:8080/base"
preserve_host = true

[[forward]]
connection_string = "${HC1}"
target = "ssh"
bind = "2222"

[[serve]]
name = "api"
connection_string = "${OTHER}"
app = "main:app"
app_dir = "apps"
wsgi = true
workers = 4
"""


def parse(text: str, environ: dict[str, str] | None = None) -> dict[str, object]:
    config = parse_agent_config(
        text, source="hyco.toml", environ=ENV if environ is None else environ, base=Path("/srv")
    )
    return dict(config.entries)


def refusal(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        parse(text, environ)
    message = str(raised.value)
    assert KEY not in message
    return message


def test_four_entries_with_their_defaults() -> None:
    entries = parse(FOUR)
    assert list(entries) == ["hc1", "web", "ssh", "api"]
    expose = entries["hc1"]
    assert isinstance(expose, ExposeEntry)
    assert expose.targets == (
        Target("ssh", "127.0.0.1", 22),
        Target("127.0.0.1-5432", "127.0.0.1", 5432),
    )
    assert expose.connection_string == CS
    assert expose.line == 2
    web = entries["web"]
    assert isinstance(web, ExposeEntry)
    assert (web.http, web.strip_prefix, web.preserve_host) == (
        "http://127.0.0.1:8080/base",
        True,
        True,
    )
    forward = entries["ssh"]
    assert isinstance(forward, ForwardEntry)
    assert (forward.host, forward.port, forward.target) == ("127.0.0.1", 2222, "ssh")
    serve = entries["api"]
    assert isinstance(serve, ServeEntry)
    assert (serve.app_dir, serve.wsgi, serve.workers, serve.lifespan) == (
        Path("/srv/apps"),
        True,
        4,
        "auto",
    )


def test_no_secret_in_an_entrys_repr() -> None:
    assert all(KEY not in repr(entry) for entry in parse(FOUR).values())


def test_moving_an_entry_changes_nothing_but_an_edit_does() -> None:
    before = parse(FOUR)
    moved = parse("\n\n" + FOUR)
    assert before == moved
    assert moved["web"].line == before["web"].line + 2  # type: ignore[attr-defined]
    edited = parse(FOUR.replace("workers = 4", "workers = 5"))
    assert edited["api"] != before["api"]
    assert edited["web"] == before["web"]


def test_dollars_and_variables() -> None:
    text = '[[forward]]\nconnection_string = "${HC1}"\ntarget = "a$$b"\nbind = "1"\nname = "x"\n'
    entry = parse(text)["x"]
    assert isinstance(entry, ForwardEntry)
    assert entry.target == "a$b"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            '[[expose]]\nconnection_string = "${NOPE}"\ntargets = ["a=h:1"]\n',
            2,
            "${NOPE} is not set",
        ),
        ('[[expose]]\nconnection_string = "$NOPE"\ntargets = ["a=h:1"]\n', None, None),
        (
            '[[expose]]\nconnection_string = "${HC1}"\ntargets = ["a=h:1"]\nport = 3\n',
            4,
            "unknown key 'port'",
        ),
        ('[[expose]]\nconnection_string = "${HC1}"\n', 1, "either targets"),
        (
            '[[expose]]\nconnection_string = "${HC1}"\ntargets = ["a=h:1"]\nhttp = "http://h"\n',
            1,
            "either targets",
        ),
        ('[[expose]]\nconnection_string = "${HC1}"\ntargets = []\n', 3, "targets is empty"),
        ('[[expose]]\nconnection_string = "${HC1}"\ntargets = ["nope"]\n', 3, "name=host:port"),
        ('[[expose]]\n\nconnection_string = 7\ntargets = ["a=h:1"]\n', 3, "a string"),
        (
            '[[expose]]\nconnection_string = "Endpoint=x"\ntargets = ["a=h:1"]\n',
            2,
            "connection_string",
        ),
        ('[[forward]]\nconnection_string = "${HC1}"\ntarget = "t"\n', 1, "needs bind"),
        (
            '[[forward]]\nconnection_string = "${HC1}"\ntarget = "t"\nbind = "x:y"\n',
            4,
            "[HOST:]PORT",
        ),
        ('[[serve]]\nconnection_string = "${HC1}"\napp = "main"\n', 3, "module:attribute"),
        (
            '[[serve]]\nconnection_string = "${HC1}"\napp = "m:a"\nworkers = true\n',
            4,
            "whole number",
        ),
        (
            '[[serve]]\nconnection_string = "${HC1}"\napp = "m:a"\nlifespan = "x"\n',
            4,
            "lifespan is one of",
        ),
        (
            '[[serve]]\nconnection_string = "${HC1}"\napp = "m:a"\nname = "a b"\n',
            4,
            "no entry name",
        ),
        (
            '[[serve]]\nconnection_string = "${HC1}"\napp = "m:a"\nworkers = 2\n',
            4,
            "for WSGI apps only",
        ),
        (
            '[[serve]]\nconnection_string = "${HC1}"\napp = "m:a"\nwsgi = true\nlifespan = "on"\n',
            5,
            "for ASGI apps only",
        ),
        ("[tunnel]\nx = 1\n", 1, "unknown table 'tunnel'"),
        ('[expose]\nconnection_string = "${HC1}"\n', 1, "write [[expose]]"),
        ("# nothing\n", None, "has no entries"),
        ("[[expose]\n", 1, "not valid TOML"),
        (
            '[[expose]]\nconnection_string = "${HC1}"\ntargets = ["a=h:1"]\n'
            '[[serve]]\nconnection_string = "${HC1}"\napp = "m:a"\n',
            4,
            "the name 'hc1' is taken by the entry at line 1",
        ),
        (
            '[[forward]]\nconnection_string = "${HC1}"\ntarget = "a"\nbind = "7000"\n'
            '[[forward]]\nconnection_string = "${HC1}"\ntarget = "b"\nbind = "127.0.0.1:7000"\n',
            5,
            "also the bind of entry 'a'",
        ),
    ],
)
def test_each_mistake_names_its_line(text: str, line: int | None, words: str | None) -> None:
    message = refusal(text)
    if words is None:  # a lone $ is no variable: the message says how to write one
        assert "hyco.toml:2: '$NOPE'" in message
        assert "${NAME}" in message
        return
    assert words in message
    if line is not None:
        assert message.startswith(f"hyco.toml:{line}: ") or f"line {line}" in message, message


def test_the_file_is_read_from_disk_relative_to_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "hyco.toml"
    path.write_text(
        '[[serve]]\nconnection_string = "Endpoint=sb://h/;SharedAccessKeyName=a;'
        'SharedAccessKey=b;EntityPath=e"\napp = "main:app"\n',
        encoding="utf-8-sig",
    )
    (entry,) = load_agent_config(path).entries.values()
    assert isinstance(entry, ServeEntry)
    assert entry.app_dir == tmp_path


def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_agent_config(tmp_path / "missing.toml")
