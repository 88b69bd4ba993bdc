"""S17: what ``erpgw dlq show`` masks. A prospect's name is personal wherever it appears; a
``name`` is personal in a customer record and left alone in a product record."""

from __future__ import annotations

from contracts import redact


def test_names_of_people_are_masked_and_names_of_things_are_not() -> None:
    doc = {"payload": [
        {"type": "customer.upserted.v1", "customer_id": "cus_1", "name": "Ada Lovelace"},
        {"type": "deal.registered.v1", "deal_id": "dl_1", "prospect_name": "Ada Lovelace"},
        {"type": "product.upserted.v1", "product_id": "prod_seat", "name": "Seat"}]}
    customer, deal, product = redact(doc)["payload"]
    assert customer == {"type": "customer.upserted.v1", "customer_id": "cus_1",
                        "name": "***ce"}
    assert deal["prospect_name"] == "***ce" and deal["deal_id"] == "dl_1"
    assert product["name"] == "Seat"
