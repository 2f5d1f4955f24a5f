"""The Django admin (ricloud_server/adminsite.py, docs/DECISIONS.md 137-139).

Organisations and keys are managed here through the same services as the API and the key
commands (so the auth cache is bumped and a rotated or deactivated token stops at once): a token
is shown once, on the page that answers its creation or rotation, never stored in plain text
(not even in a message, which would sit in the session). Tasks, events, webhook deliveries and
results are the engine's state: read-only, with search and filters.
"""
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.template.response import TemplateResponse

from .choices import KeyState
from .models import Event, Key, Organisation, Result, Task, WebhookDelivery
from .services.organisations import create_key, create_organisation, rotate_key, update_key, update_organisation

__all__ = ["OrganisationAdmin", "KeyAdmin", "TaskAdmin", "EventAdmin", "WebhookDeliveryAdmin", "ResultAdmin"]


def show_tokens(request, keys, title: str) -> TemplateResponse:
    """The page that shows new tokens, once: answered directly, never redirected to."""
    response = TemplateResponse(request, "admin/tasks_app/key/tokens.html", {
        **admin.site.each_context(request), "title": title, "keys": keys,
        "opts": Key._meta, "has_view_permission": True,
    })
    response["Cache-Control"] = "no-store"
    return response


class KeyInline(admin.TabularInline):
    model = Key
    fields = ("id", "state", "retrieval_protocol", "date_created")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "state", "active_keys", "date_created")
    list_filter = ("state",)
    search_fields = ("name", "slug", "=id")
    fields = ("name", "slug", "state", "storage_config_default", "webhook_config_default", "date_created")
    readonly_fields = ("slug", "state", "storage_config_default", "webhook_config_default", "date_created")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            active_key_count=Count("keys", filter=Q(keys__state=KeyState.ACTIVE)))

    @admin.display(description="active keys", ordering="active_key_count")
    def active_keys(self, obj):
        return obj.active_key_count

    def get_inlines(self, request, obj):
        return (KeyInline,) if obj else ()  # a new organisation's first key is made with it

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            update_organisation(organisation=obj, name=form.cleaned_data["name"])
        else:
            created, key = create_organisation(name=form.cleaned_data["name"])
            obj.pk, obj._state.adding, obj.new_key = created.pk, False, key

    def response_add(self, request, obj, post_url_continue=None):
        return show_tokens(request, [obj.new_key], f"Organisation “{obj.name}” and its first key")


@admin.register(Key)
class KeyAdmin(admin.ModelAdmin):
    list_display = ("id", "organisation", "state", "retrieval_protocol", "stream", "date_created")
    list_filter = ("state", "retrieval_protocol")
    list_select_related = ("organisation",)
    search_fields = ("=id", "organisation__name")
    fields = ("organisation", "state", "retrieval_protocol", "stream", "storage_config", "webhook_config",
              "date_created")
    actions = ("rotate", "deactivate")

    def get_readonly_fields(self, request, obj=None):
        # A new key: its organisation and protocol. An existing key: its state (activate and
        # deactivate) and protocol; the rest is fixed, and the token is never shown again.
        if obj is None:
            return ("state", "stream", "storage_config", "webhook_config", "date_created")
        return ("organisation", "stream", "storage_config", "webhook_config", "date_created")

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            changes = {name: form.cleaned_data[name] for name in form.changed_data}
            update_key(key=obj, **changes)
        else:
            key = create_key(organisation=form.cleaned_data["organisation"],
                             retrieval_protocol=form.cleaned_data["retrieval_protocol"])
            obj.pk, obj._state.adding, obj.plaintext_token = key.pk, False, key.plaintext_token

    def response_add(self, request, obj, post_url_continue=None):
        return show_tokens(request, [obj], f"Key {obj.pk} of “{obj.organisation}”")

    @admin.action(description="Rotate the selected keys (new tokens, shown once; the old ones stop at once)")
    def rotate(self, request, queryset):
        active = list(queryset.filter(state=KeyState.ACTIVE).order_by("id"))
        skipped = queryset.exclude(state=KeyState.ACTIVE).count()
        if skipped:
            messages.warning(request, f"{skipped} key(s) not active: not rotated (their tokens would not work).")
        if not active:
            return None
        return show_tokens(request, [rotate_key(key=key) for key in active], "Rotated keys")

    @admin.action(description="Deactivate the selected keys (their tokens stop at once)")
    def deactivate(self, request, queryset):
        keys = list(queryset.exclude(state=KeyState.DEACTIVATED))
        for key in keys:
            update_key(key=key, state=KeyState.DEACTIVATED)
        messages.success(request, f"Deactivated {len(keys)} key(s).")


def values_filter(field: str, values) -> type:
    """A filter over known values: Django's default for a column without choices runs SELECT
    DISTINCT over the whole table on every list page, too costly for tasks, events and results."""

    class ValuesFilter(admin.SimpleListFilter):
        title = field.replace("_", " ")
        parameter_name = field

        def lookups(self, request, model_admin):
            return [(value, value) for value in values]

        def queryset(self, request, queryset):
            return queryset.filter(**{field: self.value()}) if self.value() else queryset

    return ValuesFilter


TASK_TYPES = ("session.init", "info", "data", "file", "webhook_config.test", "storage_config.test")
EVENT_TYPES = ("task", "poll", "session", "subscription", "user", "source", "webhook_config", "storage_config")
EVENT_ACTIONS = ("created", "succeeded", "failed", "completed", "expired", "deleted", "updated")


class ReadOnlyAdmin(admin.ModelAdmin):
    """The engine's state: viewed, never written here (services own every change)."""

    show_full_result_count = False  # no second COUNT(*) over the whole table per page

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = ("id", "organisation_id", "type", "target", "source_type", "state", "error", "api_version",
                    "date_created", "date_completed")
    list_filter = ("state", values_filter("type", TASK_TYPES), values_filter("api_version", ("2", "3")))
    search_fields = ("=id", "=type", "target", "=source_type", "=error", "=poll__id", "=session__id")
    exclude = ("secrets", "blocked_by")
    raw_id_fields = ("organisation", "key", "user", "source", "session", "poll")


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("id", "organisation_id", "type", "action", "object_id", "state", "date_created")
    list_filter = (values_filter("type", EVENT_TYPES), values_filter("action", EVENT_ACTIONS), "state")
    search_fields = ("=id", "=object_id", "=type", "=action")
    raw_id_fields = ("organisation", "key")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("id", "event_id", "config", "state", "attempts", "next_attempt_at", "date_delivered")
    list_filter = (values_filter("state", ("pending", "delivered", "failed")),)
    list_select_related = ("config",)
    search_fields = ("=event__id", "config__url")
    raw_id_fields = ("event", "config")


@admin.register(Result)
class ResultAdmin(ReadOnlyAdmin):
    list_display = ("id", "organisation_id", "identifier", "type", "size", "state", "date_created")
    list_filter = ("state", values_filter("type", ("json",)))
    search_fields = ("=id", "identifier", "=type", "=task__id", "=poll__id")
    exclude = ("signed_url", "content")  # a presigned URL is a credential; content: the result itself
    raw_id_fields = ("organisation", "task", "poll", "storage_config")
