"""The billing platform's adapter: its dialects (``erpgw``, ``stripe``)."""
