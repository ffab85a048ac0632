"""The reconciliation flow: one Prefect run per file that follows it from kickoff to reconciliation."""
