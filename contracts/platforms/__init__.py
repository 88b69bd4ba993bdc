"""Wire contracts of the platforms the gateway talks to (their APIs, not our canonical model).

The simulator serves these shapes and the adapters speak them, exactly as a real platform and a
real adapter would share a published API. Adapters translate them into canonical messages.
"""
