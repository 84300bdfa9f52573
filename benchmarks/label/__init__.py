"""Benchmarks of the labelling module (optimizer.label): label errors against cleanlab, crowd
aggregation, active-learning curves and labelling throughput. Each script writes its figures as
JSON and a Markdown snippet into benchmarks/label/results/; ``python -m benchmarks.label.run_all``
runs them all."""
