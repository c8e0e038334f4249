"""Finance reports, derived from the ledger (postings) and usage records; CSV and JSON.

Time is *accounting* time: a ledger entry counts at its ``effective_at`` (when the event
happened: a top-up's receipt, a usage batch's ``received_at``, a lot's expiry), a usage record
at its ``received_at`` for revenue and at ``occurred_at`` for reseller statements. Every report
carries its own check (``summary``): the trial balance sums to zero per book, the rollforward's
opening plus movements equals its closing and the ledger's cached balances (less later
movements), revenue by model equals the ledger's ``revenue:usage``, the aging's invoices equal
the ledger's ``receivable:invoiced`` as of the same moment. Callers read a report from one
snapshot (REPEATABLE READ) so that its checks compare figures of the same moment.
"""

from invoicing.reports.base import Report
from invoicing.reports.ledger_reports import prepaid_liability, trial_balance
from invoicing.reports.receivables import receivables_aging
from invoicing.reports.rules import MARGIN_GROUPS, aging_bucket, classify_movement
from invoicing.reports.statements import reseller_statement, sub_account_statement
from invoicing.reports.usage_reports import margin, revenue_by_model

__all__ = [
    "MARGIN_GROUPS",
    "Report",
    "aging_bucket",
    "classify_movement",
    "margin",
    "prepaid_liability",
    "receivables_aging",
    "reseller_statement",
    "revenue_by_model",
    "sub_account_statement",
    "trial_balance",
]
