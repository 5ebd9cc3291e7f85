"""The local relay's configuration: namespaces, hybrid connections and their SAS rules, from TOML.

One relay serves many namespaces on one port, as the Azure Relay service does; this module says
which namespaces and hybrid connections exist, which keys grant which rights, and how the relay
listens. Every value object checks itself when built, so a configuration that exists is valid;
:func:`parse_config` adds to those checks the file's structure (unknown keys, wrong types) and
says where in the file each problem is. No error message ever contains a key.

The file reads::

    [relay]                     # optional; these are the defaults
    host = "127.0.0.1"
    port = 9090                 # 0 = any free port
    public_url = "wss://relay.example.com"  # where clients reach it (default: host and port)
    max_listeners_per_entity = 25
    rendezvous_timeout = 30.0
    request_timeout = 60.0
    write_timeout = 10.0        # seconds a peer may leave the relay's writes unread
    max_connections_per_address = 500  # default: half the descriptor limit; 0 = no limit
    max_token_lifetime = 0      # seconds a token may have left; 0 = no limit
    stats_requires_manage = false

    [[namespace]]
    name = "contoso.servicebus.windows.net"
    default = true
    public_url = "wss://contoso.example.com:8443"  # optional, for this namespace only

      [[namespace.rule]]        # valid for every entity of the namespace
      name = "RootManageSharedAccessKey"
      primary_key = "..."
      secondary_key = "..."     # optional
      rights = ["Manage"]

      [[namespace.entity]]
      name = "hc1"
      requires_client_authorization = true

        [[namespace.entity.rule]]   # valid for this entity only
        name = "send-only"
        primary_key = "..."
        rights = ["Send"]

The package's modules: ``values`` (the error, the settings' rules, public addresses),
``model`` (the value objects and the default configuration) and ``file`` (reading and watching
the TOML file).
"""

from __future__ import annotations

from .file import ConfigWatcher, load_config, parse_config
from .model import (
    AccessRule,
    EntityConfig,
    NamespaceConfig,
    RelayConfig,
    Right,
    connection_string_for,
    default_config,
)
from .values import ConfigError, PublicAddress, parse_public_url

__all__ = [
    "AccessRule",
    "ConfigError",
    "ConfigWatcher",
    "EntityConfig",
    "NamespaceConfig",
    "PublicAddress",
    "RelayConfig",
    "Right",
    "connection_string_for",
    "default_config",
    "load_config",
    "parse_config",
    "parse_public_url",
]
