"""erpgw sim."""
