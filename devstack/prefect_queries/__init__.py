"""What tests, benchmarks and the demo ask of Prefect: stored events, and the pipeline's events to post."""
