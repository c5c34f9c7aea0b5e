"""Kraken: a memcached-compatible pubsub server for realtime apps.

Application servers publish small invalidation messages to topics; every other
client subscribed to those topics polls them and reloads what changed.
"""

__version__ = "0.1.0"
