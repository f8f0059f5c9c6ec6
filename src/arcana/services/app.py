"""``Services``: what the entry points of one process (routes, gRPC servicers, job handlers,
CLI commands) are given. A plain record: the composition root (``arcana.bootstrap``) fills it,
nothing here builds or starts anything.

Every field is a service or a domain port, never an adapter, so an entry point cannot reach
SQL, Redis or the plugin host around the use cases.
"""

from __future__ import annotations

from dataclasses import dataclass

from arcana.config import Settings
from arcana.domain.delivery import CommitListeners, EventFeed
from arcana.domain.jobs import JobQueue
from arcana.services.auth import AuthService
from arcana.services.health import HealthService
from arcana.services.identity import IdentityService
from arcana.services.jobs import JobService
from arcana.services.maintenance import MaintenanceService
from arcana.services.notifications import NotificationService
from arcana.services.plugins import PluginService
from arcana.services.products import ProductService
from arcana.services.users import UserService, UserSyncService


@dataclass(frozen=True, eq=False)
class Services:
    settings: Settings
    # auth
    identity: IdentityService
    users: UserService
    auth: AuthService
    user_sync: UserSyncService
    # catalog
    products: ProductService
    # plugins
    plugins: PluginService
    # jobs
    queue: JobQueue
    jobs: JobService
    notifications: NotificationService
    maintenance: MaintenanceService
    # events
    feed: EventFeed
    commits: CommitListeners
    # operations
    health: HealthService
