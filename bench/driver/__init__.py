"""The benchmark driver behind bench/run.py: config, processes, Kubernetes access, measurement, reports."""
