"""The benchmark's sandbox world (written by bench/gen_world.py, used by the driver and the peer).

Every secret here is fake.
"""

TENANT = "7b0e4c2a-5d1f-4e8a-9c3b-2f6a1d8e4c10"
OPERATOR_APP = "3f2b8c1d-9e4a-4b7c-a6d5-1e8f2c3b4a50"
OPERATOR_SECRET = "fake-operator-secret-not-real"
ANTIMATTER_APP = "8d4e2f1a-7c3b-4e5d-b9a8-6f2e1d4c3b70"
DOMAIN = "dm-7fQ2xPz9KdL"
API_KEY = "fake-antimatter-api-key-not-real"
HSMS = 5
KEYS_PER_HSM = 1000  # pre-existing keys per HSM: enough for half of 10,000 objects
NAMESPACES = 10
