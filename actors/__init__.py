"""erpgw actors."""
