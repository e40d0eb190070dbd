"""Message schemas that kafka-python 3 does not ship, in its JSON format, for the version sweep
(test_protocol_versions.py). Each file describes one message as Kafka 4.1 serves it, written
from Kafka's protocol documentation; kafka-python's generic codec encodes and decodes them."""
