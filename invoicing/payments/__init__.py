"""Card payments through a payment provider (Stripe).

Checkout, webhooks, refunds, disputes and reconciliation. Only
:mod:`invoicing.payments.stripe_gateway` imports the ``stripe`` SDK.
"""
