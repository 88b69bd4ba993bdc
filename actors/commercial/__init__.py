"""The commercial lifecycle's orchestration: flow 1, deal to contract (a saga), and flow 5,
the subscription's amendments, renewals and cancellation carried to the ERP and revenue."""

from .actor import SAGA_CONSUMER, DealSaga, SagaPlatforms
from .saga import STEPS, UNDO, DealPlan, SagaState, next_action, plan_deal
from .subscriptions import SUBSCRIPTION_CONSUMER, SubscriptionSync

__all__ = ["SAGA_CONSUMER", "STEPS", "SUBSCRIPTION_CONSUMER", "UNDO", "DealPlan", "DealSaga",
           "SagaPlatforms", "SagaState", "SubscriptionSync",
           "next_action", "plan_deal"]
