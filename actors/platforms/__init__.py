"""One typed client per platform, with its breaker, budget, credentials and dialect.

``auth`` turns ``[<platform>.auth]`` settings into the credentials every outbound request
carries; ``erp`` is the ERP client (dialects ``erpgw`` and ``netsuite``).
"""
