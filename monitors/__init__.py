"""What we watch and do: configuration, the ledger, thresholds and verdicts, actions, reports."""
