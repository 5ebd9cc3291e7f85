"""hyco_relay: a local relay service speaking the Azure Relay Hybrid Connections protocol."""
