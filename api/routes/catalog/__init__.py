"""The catalog (admin writes it).

Models, rate cards, contracts, reseller price books, token packages, coding plans, top-up bonus
rules, failed-request policies, and price quotes.

Customers, resellers and gateways read the models, packages and plans they buy from; finance
and resellers the list rate cards; every key quotes the prices of the accounts it can see.

Every catalog object is immutable once created; a new version supersedes it (see
``plans/README.md``). Money and prices are decimal strings in and out, never JSON numbers.
One module per resource; this package exports their controllers and the shapes other routes
reuse (a model's prices, a price quote).
"""

from api.routes.catalog.bonus_rules import TopupBonusRulesController
from api.routes.catalog.coding_plans import PlansController
from api.routes.catalog.contracts import ContractsController
from api.routes.catalog.cost_cards import CostCardsController, RatingWatermarksController
from api.routes.catalog.models import ModelsController
from api.routes.catalog.packages import PackagesController
from api.routes.catalog.policies import FailedRequestPoliciesController
from api.routes.catalog.price_books import ResellerPriceBooksController
from api.routes.catalog.prices import ModelPriceOut, price_out
from api.routes.catalog.quotes import PriceQuoteOut, PriceQuotesController, quote_out
from api.routes.catalog.rate_cards import RateCardsController

__all__ = [
    "ContractsController",
    "CostCardsController",
    "FailedRequestPoliciesController",
    "ModelPriceOut",
    "ModelsController",
    "PackagesController",
    "PlansController",
    "PriceQuoteOut",
    "PriceQuotesController",
    "RateCardsController",
    "RatingWatermarksController",
    "ResellerPriceBooksController",
    "TopupBonusRulesController",
    "price_out",
    "quote_out",
]
