"""v3 viewsets. Scoping to the caller's organisation happens once, in `OrganisationViewSet`."""
import re
import time
from types import SimpleNamespace

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection, models, transaction
from django.db.models import Prefetch, QuerySet
from django.http import Http404
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response
from rest_framework.views import APIView

from ..choices import ResultState
from ..deferred import RESERVE, Held, deferrable
from ..downloads import use_request
from ..filters import (
    EventFilterSet,
    PollFilterSet,
    ResultFilterSet,
    SessionFilterSet,
    SourceFilterSet,
    SubscriptionFilterSet,
    TaskFilterSet,
    UserFilterSet,
)
from ..models import (
    Event,
    Key,
    Permissions,
    Poll,
    Result,
    Session,
    Source,
    StorageConfig,
    Subscription,
    Task,
    User,
    WebhookConfig,
)
from ..services.awaiting import (
    await_seconds,
    poll_channel,
    session_channel,
    subscription_channel,
    task_channel,
    wait_until,
)
from ..services.client_tasks import create_task
from ..services.configs import deactivate_config, queue_config_test
from ..services.counts import COUNTED_FILTERS, count_tasks, uuid7_window
from ..services.events import materialise
from ..services.organisations import create_key, rotate_key, update_key, update_organisation
from ..services.permissions import create_permissions, update_permissions
from ..services.polls import (
    completed_poll,
    create_poll,
    create_poll_at_once,
    flush_wal,
    lock_session,
    poll_from_notice,
)
from ..services.results import ack_result, ack_results
from ..services.sessions import create_session, expire_session, get_or_create_source
from ..services.sources import update_source
from ..services.storage import (
    create_storage_config,
    update_storage_config,
)
from ..services.subscriptions import create_subscription, delete_subscription
from ..services.users import get_or_create_user, update_user
from ..services.webhooks import (
    create_webhook_config,
    update_webhook_config,
)
from .client_inputs import SourceUpdateInput, TaskCreateInput
from .errors import APIError
from .inputs import (
    KeyCreateInput,
    KeyUpdateInput,
    OrganisationUpdateInput,
    PermissionsInput,
    PermissionsUpdateInput,
    PollCreateInput,
    ResultAckInput,
    SessionCreateInput,
    SourceCreateInput,
    StorageConfigInput,
    StorageConfigUpdateInput,
    SubscriptionCreateInput,
    UserCreateInput,
    UserUpdateInput,
    WebhookConfigInput,
    poll_create_input,
)
from .pagination import list_envelope
from .release import unbind
from .serializers import (
    RESULT_COLUMNS,
    TASK_COLUMNS,
    EventSerializer,
    KeySerializer,
    OrganisationSerializer,
    PermissionsSerializer,
    PollSerializer,
    ResultSerializer,
    SessionSerializer,
    SourceSerializer,
    StorageConfigSerializer,
    SubscriptionSerializer,
    TaskSerializer,
    UserSerializer,
    WebhookConfigSerializer,
    render_poll,
    render_task,
)

__all__ = [
    "OrganisationView",
    "CurrentKeyView",
    "KeyViewSet",
    "UserViewSet",
    "SourceViewSet",
    "SessionViewSet",
    "PollViewSet",
    "TaskViewSet",
    "ResultViewSet",
    "EventViewSet",
    "WebhookConfigViewSet",
    "StorageConfigViewSet",
    "SubscriptionViewSet",
    "PermissionsViewSet",
]

MAX_BIGINT = 2**63 - 1
DIGITS = re.compile(r"[0-9]+")


def validated(serializer_class, data):
    serializer = serializer_class(data=data)
    try:
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data
    finally:
        unbind(serializer)  # its fields point back to it (tasks_app/api/release.py)


def not_found(field: str, message: str) -> APIError:
    return APIError("invalid-parameter", "One or more parameters failed validation.", params={field: [message]})


def settle(view, channels: list[str], settled, answer, unsettled_since=None, accept=None, subscribed_by=None):
    """Honour `Ricloud-Await` on endpoints that trigger work (API.md §1.10): the response of
    `answer()` once `settled()` is true or the requested wait is over. Under ricloud_server.serve
    the wait is a `Held` response finished on the event loop (no thread, no database connection
    while it waits); elsewhere it blocks this thread. `unsettled_since`: a `time.monotonic()`
    before which the work cannot have settled (taken before the view created it), which lets the
    server skip the first check when no notification came since; `subscribed_by`: a later moment
    before which nothing can have notified `channels` (deferred.Held). `accept(message)`: whether a
    message on `channels` settles the work by itself (deferred.Held)."""
    request = view.request
    seconds = await_seconds(request.headers.get("Ricloud-Await"))
    if seconds and deferrable(request):
        return Held(channels, settled, lambda: finish_deferred(view, answer), seconds, unsettled_since, accept,
                    subscribed_by)
    if seconds:
        wait_until(channels, settled, seconds)
    return answer()


def finish_deferred(view, answer):
    """`answer()` rendered as DRF's dispatch would render it, exceptions included."""
    use_request(view.request)  # answered on another thread than the request's (tasks_app/downloads.py)
    try:
        response = answer()
    except Exception as exc:  # noqa: BLE001 - DRF's handler answers API errors and re-raises the rest
        response = view.handle_exception(exc)
    response = view.finalize_response(view.request, response)
    response.render()
    return response


def answer_from_written(instance, **related) -> None:
    """Fill the related-object caches of a just-created instance with what was written, so that
    the response renders it without reading it back."""
    cache = {}
    for name, objects in related.items():
        # A bare queryset of the related model, filled: the related manager's own would point back
        # to the instance (its filter and hints), a reference cycle left to the garbage collector.
        queryset = QuerySet(model=getattr(instance, name).model)
        queryset._result_cache, queryset._prefetch_done = list(objects), True
        cache[name] = queryset
    instance._prefetched_objects_cache = cache


def task_settled(task_id):
    return lambda: Task.objects.filter(id=task_id).exclude(state__in=("pending", "processing")).exists()


class OrganisationViewSet(viewsets.GenericViewSet):
    """Every queryset is limited to the caller's organisation: a foreign id is a plain 404."""

    def initial(self, request, *args, **kwargs):
        use_request(request)  # the host of results' download URLs (tasks_app/downloads.py)
        super().initial(request, *args, **kwargs)

    def get_queryset(self):
        return super().get_queryset().filter(organisation_id=self.request.auth.organisation_id)

    def get_object(self):
        # A malformed or out-of-range id is "no such resource", never a database error.
        raw = self.kwargs["pk"]
        integer = isinstance(self.queryset.model._meta.pk, models.AutoField | models.BigAutoField)
        if integer and not DIGITS.fullmatch(raw):
            raise Http404  # `+1`, ` 1`, `1.0` name no resource, even if int() would read them
        try:
            pk = self.queryset.model._meta.pk.to_python(raw)
        except (DjangoValidationError, ValueError, TypeError):
            raise Http404 from None
        if isinstance(pk, int) and not 0 < pk <= MAX_BIGINT:
            raise Http404
        # List filters in the query string never hide the object named in the path.
        obj = get_object_or_404(self.get_queryset(), pk=pk)
        self.check_object_permissions(self.request, obj)
        return obj

    def lookup(self, model, pk, field: str):
        """Fetch a related object of the caller's organisation named in a request body."""
        obj = model.objects.filter(organisation_id=self.request.auth.organisation_id, pk=pk).first()
        if obj is None:
            raise not_found(field, f"No {model.__name__.lower()} with id {pk}.")
        return obj


class ListRetrieveViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrganisationViewSet):
    pass


def owned_configs(request, data: dict) -> dict:
    """Check that config ids named in a body are configs of the caller's organisation."""
    models = {"storage_config": StorageConfig, "webhook_config": WebhookConfig}
    for name, value in data.items():
        base = name.removesuffix("_default")
        if base in models and value is not None:
            found = models[base].objects.filter(organisation_id=request.auth.organisation_id, id=value).exists()
            if not found:
                raise not_found(name, f"No {base.replace('_', ' ')} with id {value}.")
    return data


class OrganisationView(APIView):
    def get(self, request):
        return Response(OrganisationSerializer(request.auth.organisation).data)

    def post(self, request):
        data = owned_configs(request, validated(OrganisationUpdateInput, request.data))
        organisation = update_organisation(organisation=request.auth.organisation, **data)
        return Response(OrganisationSerializer(organisation).data)


class CurrentKeyView(APIView):
    def get(self, request):
        return Response(KeySerializer(request.auth).data)


class KeyViewSet(ListRetrieveViewSet):
    queryset = Key.objects.all()
    serializer_class = KeySerializer

    def create(self, request):
        data = owned_configs(request, validated(KeyCreateInput, request.data))
        key = create_key(organisation=request.auth.organisation, **data)
        return Response(KeySerializer(key).data, status=status.HTTP_201_CREATED)

    def update(self, request, pk=None):
        data = owned_configs(request, validated(KeyUpdateInput, request.data))
        return Response(KeySerializer(update_key(key=self.get_object(), **data)).data)

    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        return Response(KeySerializer(rotate_key(key=self.get_object())).data)


class UserViewSet(ListRetrieveViewSet):
    queryset = User.objects.all()
    serializer_class = UserSerializer
    filterset_class = UserFilterSet

    def create(self, request):
        data = validated(UserCreateInput, request.data)
        if data.get("organisation") not in (None, request.auth.organisation_id):
            raise APIError("missing-scope", "Only super organisations may act for another organisation.", status_code=403)
        key = request.auth
        if data.get("key") not in (None, key.id):
            key = self.lookup(type(key), data["key"], "key")
        user, created = get_or_create_user(key=key, identifier=data["identifier"])
        return Response(UserSerializer(user).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def update(self, request, pk=None):
        data = validated(UserUpdateInput, request.data)
        user = update_user(user=self.get_object(), **data)
        return Response(UserSerializer(user).data)


class SourceViewSet(ListRetrieveViewSet):
    queryset = Source.objects.prefetch_related("children")
    serializer_class = SourceSerializer
    filterset_class = SourceFilterSet

    def create(self, request):
        """Primary sources are get-or-create on (user, type, identifier), as POST /sessions does."""
        from workers.handlers import source_types

        data = validated(SourceCreateInput, request.data)
        user = self.lookup(User, data["user"], "user")
        if data["type"] not in source_types():
            raise APIError("invalid-parameter", "One or more parameters failed validation.",
                           params={"type": [f"Unsupported source type; supported: {', '.join(source_types())}."]})
        source, created = get_or_create_source(key=request.auth, user=user, source_type=data["type"],
                                               identifier=data["identifier"])
        source = self.get_queryset().get(id=source.id)
        return Response(self.get_serializer(source).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def update(self, request, pk=None):
        source = self.get_object()
        update_source(source=source, **validated(SourceUpdateInput, request.data))
        return Response(self.get_serializer(self.get_queryset().get(id=source.id)).data)

    @action(detail=True)
    def children(self, request, pk=None):
        source = self.get_object()
        queryset = self.filter_queryset(self.get_queryset().filter(parent_id=source.id))
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class SessionViewSet(ListRetrieveViewSet):
    queryset = Session.objects.select_related("source").prefetch_related("source__children")
    serializer_class = SessionSerializer
    filterset_class = SessionFilterSet

    def create(self, request):
        from workers.handlers import source_types

        since = time.monotonic()
        data = validated(SessionCreateInput, request.data)
        source = data["source"]
        user = self.lookup(User, source["user"], "source")
        if source["type"] not in source_types():
            raise APIError(
                "invalid-parameter",
                "One or more parameters failed validation.",
                params={"source": {"type": [f"Unsupported source type; supported: {', '.join(source_types())}."]}},
            )
        session = create_session(
            key=request.auth, user=user, source_type=source["type"], identifier=source["identifier"], payload=data["payload"]
        )
        return settle(
            self, [session_channel(session.id)],
            lambda: Session.objects.filter(id=session.id).exclude(state="pending").exists(),
            lambda: Response(self.get_serializer(self.get_queryset().get(id=session.id)).data,
                             status=status.HTTP_201_CREATED),
            unsettled_since=since if session.state == "pending" else None)

    def destroy(self, request, pk=None):
        session = expire_session(session=self.get_object())
        return Response(self.get_serializer(session).data)


class PollViewSet(ListRetrieveViewSet):
    queryset = Poll.objects.prefetch_related(
        Prefetch("tasks", queryset=Task.objects.only("id", "state", "type", "target", "error", "poll_id").order_by("id")),
        Prefetch("results", queryset=Result.objects.order_by("id")),
    )
    serializer_class = PollSerializer
    filterset_class = PollFilterSet

    def create(self, request):
        since = time.monotonic()
        data = poll_create_input(request.data) or validated(PollCreateInput, request.data)
        held = bool(await_seconds(request.headers.get("Ricloud-Await")))
        poll, durable = None, True
        if not data.get("subscription") and data.get("source") is None:
            # A held create is revealed only by its answer, which makes it durable first (`_await`).
            # Held on the event loop, the process's hub subscribes to the poll's channel while the
            # statement runs (deferred.RESERVE).
            reserve = request.META.get(RESERVE) if held else None
            poll = create_poll_at_once(
                key=request.auth, session_id=data["session"], payload=self._payload(request, data), durable=not held,
                announce=reserve and (lambda poll_id: reserve([poll_channel(poll_id)])))
            durable = poll is None or not held
        if poll is None:
            with transaction.atomic():
                poll = self._create(request, data)
        if held:
            return self._await(poll.id, since if poll.state != "completed" else None, durable,
                               getattr(poll, "subscribed_by", None))
        answer_from_written(poll, tasks=poll.created_tasks, results=[])
        return Response(self.get_serializer(poll).data, status=status.HTTP_201_CREATED)

    def _await(self, poll_id, since, durable=True, subscribed_by=None):
        """The created poll once completed: each check reads it as rows (completed_poll), and the
        check that finds it completed gives the answer its data. `durable` False: the create did
        not wait for its WAL flush. A poll completed after it was created needs none (the ending
        that completed it committed synchronously, and the WAL is flushed in order); any other
        answer (the deadline's, or a poll completed by its create) flushes first. `since`,
        `subscribed_by`: see `settle`."""
        completed = []

        def settled():
            found = completed_poll(poll_id)
            completed[:] = [found] if found else []
            return bool(found)

        def accept(message):  # the worker sent the completed poll: no need to read it
            if not durable and since is None:
                return False  # completed by its own create: the answer flushes first, on a pool thread
            found = poll_from_notice(message, poll_id)
            completed[:] = [found] if found else []
            return bool(found)

        def answer():
            if not durable and (not completed or since is None):
                flush_wal()
            if completed:
                return Response(render_poll(*completed[0]), status=status.HTTP_201_CREATED)
            return Response(self.get_serializer(self.get_queryset().get(id=poll_id)).data,
                            status=status.HTTP_201_CREATED)

        return settle(self, [poll_channel(poll_id)], settled, answer, unsettled_since=since, accept=accept,
                      subscribed_by=subscribed_by)

    def _create(self, request, data) -> Poll:
        subscription = None
        if data.get("subscription"):
            subscription = self.lookup(Subscription, data["subscription"], "subscription")
            session = subscription.session
        else:
            session = lock_session(request.auth.organisation_id, data["session"])
            if session is None:
                raise not_found("session", f"No session with id {data['session']}.")
        source = subscription.source if subscription else None
        if data.get("source") is not None:
            source = self.lookup(Source, data["source"], "source")
            if source.id != session.source_id and source.parent_id != session.source_id:
                raise not_found("source", "The source must be the session's source or one of its children.")
        return create_poll(key=request.auth, session=session, source=source, payload=self._payload(request, data),
                           subscription=subscription)

    @staticmethod
    def _payload(request, data) -> dict:
        """The poll's payload as given, its dates as validated (ISO 8601, UTC)."""
        payload = dict(request.data["payload"])
        for name in ("since", "until"):
            if name in data["payload"]:
                payload[name] = data["payload"][name].isoformat().replace("+00:00", "Z")
        return payload


class TaskViewSet(ListRetrieveViewSet):
    queryset = Task.objects.defer("payload").prefetch_related(
        Prefetch("results", queryset=Result.objects.order_by("id"), to_attr="prefetched_results")
    )
    serializer_class = TaskSerializer
    filterset_class = TaskFilterSet

    def create(self, request):
        """One info, data or file task on a session, made as a poll of that one item."""
        data = validated(TaskCreateInput, request.data)
        session = self.lookup(Session, data["session"], "session")
        source = self.lookup(Source, data["source"], "source") if data.get("source") is not None else None
        if source is not None and session.source_id not in (source.id, source.parent_id):
            raise not_found("source", "The source must be the session's source or one of its children.")
        given = data.get("payload", {})
        options = {"mock": request.data["payload"]["mock"]} if "mock" in given else {}
        for name in ("since", "until"):
            if name in given:
                options[name] = given[name].isoformat().replace("+00:00", "Z")
        task = create_task(key=request.auth, session=session, source=source, type=data["type"],
                           target=data["target"], options=options)
        return settle(self, [task_channel(task.id)], task_settled(task.id),
                      lambda: Response(TaskSerializer(Task.objects.prefetch_related("results").get(id=task.id)).data,
                                       status=status.HTTP_201_CREATED))

    def list(self, request):
        # Pages are built from values() rows: no model instances for up to 1000 tasks and their results.
        rows = self.paginate_queryset(self.filter_queryset(Task.objects.filter(
            organisation_id=request.auth.organisation_id)).values(*TASK_COLUMNS))
        results = {}
        for row in Result.objects.filter(task_id__in=[row["id"] for row in rows]).order_by("id").values(*RESULT_COLUMNS):
            results.setdefault(row["task_id"], []).append(SimpleNamespace(**row))
        return self.get_paginated_response(
            [render_task(SimpleNamespace(**row), results.get(row["id"], ())) for row in rows]
        )

    def filter_queryset(self, queryset):
        # One FilterSet per request (building its form is the costly part); count() and narrow()
        # reuse its cleaned values.
        filterset = self.filterset_class(self.request.query_params, queryset=queryset, request=self.request)
        if not filterset.is_valid():
            raise ValidationError(filterset.errors)
        self.filter_values = {
            name: value for name, value in filterset.form.cleaned_data.items() if value not in (None, "")
        }
        return filterset.qs

    def count(self, queryset) -> int:
        """`total_count` from the trigger-maintained counters when only the counted dimensions
        are filtered (a sum over a few rows instead of counting up to millions of tasks)."""
        params = {name for name in self.request.query_params if name not in ("limit", "after_id", "before_id")}
        if params <= set(COUNTED_FILTERS) and connection.vendor == "postgresql":
            return count_tasks(self.request.auth.organisation_id, self.filter_values)
        return queryset.count()

    def narrow(self, queryset):
        """Turn date_created bounds into primary-key bounds (ids are UUIDv7, minted with date_created),
        so the page walks the primary key only across the requested window."""
        return uuid7_window(queryset, self.filter_values)


class ConfigViewSet(ListRetrieveViewSet):
    """What webhook and storage configs share: DELETE deactivates, `test` returns the test task."""

    def created(self, config, task) -> Response:
        def answer():
            config.refresh_from_db()
            return Response(self.get_serializer(config).data, status=status.HTTP_201_CREATED)

        return settle(self, [task_channel(task.id)], task_settled(task.id), answer)

    def destroy(self, request, pk=None):
        return Response(self.get_serializer(deactivate_config(config=self.get_object())).data)

    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        task = queue_config_test(key=request.auth, config=self.get_object())
        return settle(self, [task_channel(task.id)], task_settled(task.id),
                      lambda: Response(TaskSerializer(Task.objects.prefetch_related("results").get(id=task.id)).data))


class WebhookConfigViewSet(ConfigViewSet):
    queryset = WebhookConfig.objects.all()
    serializer_class = WebhookConfigSerializer

    def create(self, request):
        data = validated(WebhookConfigInput, request.data)
        return self.created(*create_webhook_config(key=request.auth, url=data["url"]))

    def update(self, request, pk=None):
        config = self.get_object()
        data = validated(WebhookConfigInput, {"url": config.url, **request.data})
        config = update_webhook_config(key=request.auth, config=config, url=data["url"] if "url" in request.data else None)
        return Response(self.get_serializer(config).data)


class StorageConfigViewSet(ConfigViewSet):
    queryset = StorageConfig.objects.all()
    serializer_class = StorageConfigSerializer

    def create(self, request):
        data = validated(StorageConfigInput, request.data)
        return self.created(*create_storage_config(key=request.auth, **data))

    def update(self, request, pk=None):
        data = validated(StorageConfigUpdateInput, request.data)
        config = update_storage_config(key=request.auth, config=self.get_object(), **data)
        return Response(self.get_serializer(config).data)


class SubscriptionViewSet(ListRetrieveViewSet):
    queryset = Subscription.objects.all()
    serializer_class = SubscriptionSerializer
    filterset_class = SubscriptionFilterSet

    def create(self, request):
        data = validated(SubscriptionCreateInput, request.data)
        session = self.lookup(Session, data["session"], "session")
        source = None
        if data.get("source") is not None:
            source = self.lookup(Source, data["source"], "source")
            if source.id != session.source_id and source.parent_id != session.source_id:
                raise not_found("source", "The source must be the session's source or one of its children.")
        subscription = create_subscription(
            key=request.auth, session=session, source=source, poll_payload=request.data["poll_payload"],
            interval=data.get("interval"), date_start=data.get("date_start"), date_end=data.get("date_end"),
        )
        def answer():
            subscription.refresh_from_db()
            return Response(self.get_serializer(subscription).data, status=status.HTTP_201_CREATED)

        return settle(self, [subscription_channel(subscription.id)],
                      lambda: Subscription.objects.filter(id=subscription.id).exclude(state="pending").exists(), answer)

    def destroy(self, request, pk=None):
        return Response(self.get_serializer(delete_subscription(subscription=self.get_object())).data)


class PermissionsViewSet(ListRetrieveViewSet):
    queryset = Permissions.objects.all()
    serializer_class = PermissionsSerializer

    def create(self, request):
        data = validated(PermissionsInput, request.data)
        for_key = self.lookup(Key, data["key"], "key") if data.get("key") else None
        for_user = self.lookup(User, data["user"], "user") if data.get("user") else None
        permissions = create_permissions(key=request.auth, identifier=data["identifier"], scopes=data["scopes"],
                                         for_key=for_key, for_user=for_user)
        return Response(self.get_serializer(permissions).data, status=status.HTTP_201_CREATED)

    def update(self, request, pk=None):
        data = validated(PermissionsUpdateInput, request.data)
        return Response(self.get_serializer(update_permissions(permissions=self.get_object(), **data)).data)


class EventViewSet(ListRetrieveViewSet):
    queryset = Event.objects.all()
    serializer_class = EventSerializer
    filterset_class = EventFilterSet

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        return materialise(page) if page is not None else None

    @action(detail=True)
    def deliveries(self, request, pk=None):
        """Every webhook delivery of the event with each attempt (status, error, duration)."""
        event = self.get_object()
        deliveries = event.deliveries.prefetch_related("attempt_rows").order_by("id")
        return Response({
            "event": str(event.id),
            "deliveries": [
                {
                    "webhook_config": delivery.config_id,
                    "state": delivery.state,
                    "date_delivered": delivery.date_delivered,
                    "attempts": [
                        {"number": a.number, "url": a.url, "status_code": a.status_code, "error": a.error,
                         "duration_ms": a.duration_ms, "date_created": a.date_created}
                        for a in sorted(delivery.attempt_rows.all(), key=lambda a: a.number)
                    ],
                }
                for delivery in deliveries
            ],
        })


class ResultViewSet(ListRetrieveViewSet):
    queryset = Result.objects.all()
    serializer_class = ResultSerializer
    filterset_class = ResultFilterSet

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "list" and "state" not in self.request.query_params:
            # Consumed and expired results are listed only when asked for by state.
            queryset = queryset.filter(state=ResultState.AVAILABLE)
        return queryset

    @action(detail=True, methods=["get", "post"])
    def ack(self, request, pk=None):
        return Response(self.get_serializer(ack_result(result=self.get_object())).data)

    @action(detail=False, methods=["post"], url_path="ack")
    def ack_batch(self, request):
        data = validated(ResultAckInput, request.data)
        results = ack_results(key=request.auth, ids=data["ids"])
        return Response(list_envelope(self.get_serializer(results, many=True).data, url="/results"))
