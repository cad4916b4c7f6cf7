"""Kafka side of the daemon: the feedback consumer loop, DLQ, embedded broker and replay producer."""
