"""Step package: see logic.py (pure rules) and stage.py (Kafka wiring)."""
