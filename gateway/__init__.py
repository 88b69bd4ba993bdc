"""erpgw gateway."""
