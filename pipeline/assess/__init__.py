"""Step 6, the analyst's determination.

* ``logic``: pure rules - the automated pre-assessment (known-material hashes, empty unclassifiable
  reports), the known-hash list parser, analyst identities, and ``assessment()`` which builds every
  ``ReportAssessed`` (automated, simulated or an analyst's) with a deterministic id.
* ``simulated``: the simulated analyst's reproducible policy (pure).
* ``queue``: the PostgreSQL work queue - ``enqueue_classified`` and ``enqueue_classified_many`` (the
  stage), ``claim`` / ``claim_next``, ``find``, ``record_decisions`` / ``record_decision`` (check,
  produce with ack, mark decided) and ``simulate`` (simulated analysts, claiming runs of reports).
* ``stage``: the Kafka wiring (``tipline stage assess``); ``cli``: ``tipline analyst ...``.
"""
