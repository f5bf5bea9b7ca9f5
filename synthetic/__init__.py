"""Synthetic twins of desensitized releases (the only package that imports sdv and sdmetrics).

- ``synthetic.build.build_twin(settings, release)``: fit, sample, evaluate, publish
- ``synthetic.chain.ChainModel``: the table synthesizers chained along the foreign keys
- ``synthetic.model.TableModel``: one table's columns, groups and SDV GaussianCopula
- ``synthetic.evaluate``: SDMetrics quality / diagnostic reports and the privacy metrics and bar
- ``synthetic.cli.synth``: the ``enclave synth`` command group (entry point ``enclave.commands``)

See docs/synthetic.md.
"""
