"""erpgw bench."""
