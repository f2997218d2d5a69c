"""The service catalog (办事指南), applications (办件) and their routing to
department systems (endpoints, the event outbox, deliveries)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.fields import EncryptedJSONField, EncryptedTextField
from accounts.models import Department, IdentityLevel
from config.ids import uuid7
from config.masking import mask_url_query
from config.queries import other_values


class Channel(models.TextChoices):
    ONLINE = "online", _("网上办")
    HALL = "hall", _("窗口办")
    MAIL = "mail", _("邮寄办")


class Category(models.Model):
    """A theme citizens browse by (社保, 医保, 公积金, 户籍 …)."""

    code = models.SlugField(_("代码"), max_length=32, unique=True)
    name = models.CharField(_("名称"), max_length=50)
    name_en = models.CharField(_("英文名称"), max_length=100, blank=True)
    description = models.TextField(_("简介"), blank=True)
    sort_order = models.PositiveIntegerField(_("排序"), default=0)
    is_active = models.BooleanField(_("启用"), default=True)

    class Meta:
        ordering = ["sort_order", "code"]
        verbose_name = _("主题分类")
        verbose_name_plural = _("主题分类")

    def __str__(self) -> str:
        return self.name


class Service(models.Model):
    """One government service and its guide: who may apply, what to bring,
    what it costs, how long it takes, and the application form (JSON Schema)."""

    code = models.SlugField(_("事项编码"), max_length=64, unique=True)
    name = models.CharField(_("事项名称"), max_length=100)
    department = models.ForeignKey(
        Department, verbose_name=_("实施部门"), on_delete=models.PROTECT, related_name="services"
    )
    category = models.ForeignKey(
        Category, verbose_name=_("主题分类"), on_delete=models.PROTECT, related_name="services"
    )
    summary = models.TextField(_("事项简介"), blank=True)
    eligibility = models.TextField(_("申请条件"), blank=True)
    materials = models.JSONField(_("申请材料"), default=list, blank=True)
    fee_fen = models.PositiveIntegerField(_("收费（分）"), default=0)
    time_limit_days = models.PositiveSmallIntegerField(_("承诺时限（工作日）"), default=0)
    legal_basis = models.TextField(_("设定依据"), blank=True)
    channels = models.JSONField(_("办理渠道"), default=list)
    identity_level = models.PositiveSmallIntegerField(
        _("所需身份等级"), choices=IdentityLevel.choices, default=IdentityLevel.REAL_NAME
    )
    form_schema = models.JSONField(_("申请表（JSON Schema）"), default=dict)
    keywords = models.JSONField(_("关键词"), default=list, blank=True)
    is_active = models.BooleanField(_("上线"), default=True)
    # Set when the platform's operators take the service offline (the
    # admin, a catalog import): until they put it online again, its
    # department cannot (services.catalog.service_update).
    offline_held_at = models.DateTimeField(_("运营下线时间"), null=True, blank=True, editable=False)
    # Name and keywords with their pinyin (full and initials), lower case:
    # what ``?q=`` searches. Kept by the catalog services on every write.
    search_text = models.TextField(editable=False, default="")
    created_at = models.DateTimeField(_("创建时间"), auto_now_add=True)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        ordering = ["code"]
        verbose_name = _("服务事项")
        verbose_name_plural = _("服务事项")
        indexes = [
            models.Index(fields=["is_active", "category"], name="service_browse"),
            models.Index(fields=["department", "code"], name="service_department"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class Holiday(models.Model):
    """A day that breaks the Monday–Friday rule: a public holiday, or a
    weekend day that is worked (调休). Deadlines count working days."""

    date = models.DateField(_("日期"), unique=True)
    name = models.CharField(_("名称"), max_length=50)
    is_workday = models.BooleanField(
        _("调休上班"),
        default=False,
        help_text=_("勾选：这一天（通常是周末）上班；不勾选：这一天放假。"),
    )

    class Meta:
        ordering = ["date"]
        verbose_name = _("节假日")
        verbose_name_plural = _("节假日")

    def __str__(self) -> str:
        return f"{self.date} {self.name}"


# --- Applications ---------------------------------------------------------------------


class ApplicationStatus(models.TextChoices):
    AWAITING_PAYMENT = "awaiting_payment", _("待支付")
    SUBMITTED = "submitted", _("已提交")
    ROUTED = "routed", _("已送达部门")
    ACCEPTED = "accepted", _("已受理")
    NEEDS_INFO = "needs_info", _("待补正")
    COMPLETED = "completed", _("已办结")
    REJECTED = "rejected", _("未通过")
    CANCELLED = "cancelled", _("已撤回")


class ActorKind(models.TextChoices):
    CITIZEN = "citizen", _("申请人")
    DEPARTMENT = "department", _("部门")
    SYSTEM = "system", _("系统")


class ApplicationSerial(models.Model):
    """One row per application: the database's counter behind numbers."""

    id = models.BigAutoField(primary_key=True)

    def __str__(self) -> str:
        return str(self.pk)


class Application(models.Model):
    """A citizen's application for one service, and where it stands."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    number = models.CharField(_("办件编号"), max_length=32, unique=True)
    service = models.ForeignKey(
        Service, verbose_name=_("服务事项"), on_delete=models.PROTECT, related_name="applications"
    )
    department = models.ForeignKey(
        Department,
        verbose_name=_("办理部门"),
        on_delete=models.PROTECT,
        related_name="applications",
    )
    applicant = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("申请人"),
        on_delete=models.PROTECT,
        related_name="applications",
    )
    status = models.CharField(_("状态"), max_length=20, choices=ApplicationStatus.choices)
    # The answers carry personal data: encrypted at rest like ID numbers.
    form = EncryptedJSONField(_("申请表"), editable=False)
    fee_fen = models.PositiveIntegerField(_("应缴金额（分）"), default=0)
    department_reference = models.CharField(_("部门受理号"), max_length=100, blank=True)
    # When it went to the department (at once if free, after payment if not);
    # until then the department does not see it.
    submitted_at = models.DateTimeField(_("提交时间"), null=True, blank=True)
    accepted_at = models.DateTimeField(_("受理时间"), null=True, blank=True)
    due_date = models.DateField(_("办结期限"), null=True, blank=True)
    paused_at = models.DateTimeField(_("补正开始"), null=True, blank=True)
    closed_at = models.DateTimeField(_("结束时间"), null=True, blank=True)
    rating_score = models.PositiveSmallIntegerField(_("评价"), null=True, blank=True)
    rating_comment = models.TextField(_("评价内容"), blank=True)
    rated_at = models.DateTimeField(_("评价时间"), null=True, blank=True)
    created_at = models.DateTimeField(_("申请时间"), default=timezone.now)
    updated_at = models.DateTimeField(_("更新时间"), auto_now=True)

    class Meta:
        verbose_name = _("办件")
        verbose_name_plural = _("办件")
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["applicant", "-created_at"], name="application_citizen_feed"),
            models.Index(fields=["status", "due_date"], name="application_deadline"),
            # A department's list, newest to reach it first: without a status
            # filter (what it asks by default) and with one.
            models.Index(
                fields=["department", "-submitted_at"],
                condition=Q(submitted_at__isnull=False),
                name="application_dept_queue",
            ),
            models.Index(
                fields=["department", "status", "-submitted_at"],
                condition=Q(submitted_at__isnull=False),
                name="application_dept_status",
            ),
        ]

    def __str__(self) -> str:
        return self.number


class TimelineEntry(models.Model):
    """One step of an application's history, shown to citizen and department."""

    application = models.ForeignKey(
        Application, verbose_name=_("办件"), on_delete=models.CASCADE, related_name="timeline"
    )
    status = models.CharField(_("状态"), max_length=20, choices=ApplicationStatus.choices)
    at = models.DateTimeField(_("时间"), default=timezone.now)
    actor = models.CharField(_("操作方"), max_length=16, choices=ActorKind.choices)
    actor_label = models.CharField(_("操作方名称"), max_length=100, blank=True)
    note = models.TextField(_("说明"), blank=True)

    class Meta:
        ordering = ["at", "id"]
        verbose_name = _("办件进度")
        verbose_name_plural = _("办件进度")

    def __str__(self) -> str:
        return f"{self.get_status_display()} {timezone.localtime(self.at):%Y-%m-%d %H:%M}"


# --- Routing to department systems -------------------------------------------------------


class Endpoint(models.Model):
    """A department system's URL that receives signed events."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # Never changes: its deliveries are listed by the department they hold
    # (Delivery.department), which PostgreSQL holds equal to this one.
    department = models.ForeignKey(
        Department,
        verbose_name=_("部门"),
        on_delete=models.PROTECT,
        related_name="endpoints",
        editable=False,
    )
    url = models.URLField(_("回调地址"), max_length=500)
    description = models.CharField(_("说明"), max_length=200, blank=True)
    events = models.JSONField(_("订阅事件"), default=list)
    is_active = models.BooleanField(_("启用"), default=True)
    secret = EncryptedTextField(editable=False)
    # The secret before the last rotation keeps signing until this time, so
    # departments can switch verification over without losing events.
    previous_secret = EncryptedTextField(blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(_("停用原因"), max_length=200, blank=True)
    paused_at = models.DateTimeField(_("熔断暂停时间"), null=True, blank=True)
    pause_reason = models.CharField(_("暂停原因"), max_length=200, blank=True)
    # An operator's hold: nothing but pings goes until an operator releases
    # it; the department's own switch (is_active) cannot lift it.
    held_at = models.DateTimeField(_("运营暂停时间"), null=True, blank=True)
    hold_reason = models.CharField(_("运营暂停原因"), max_length=200, blank=True)
    consecutive_failures = models.PositiveIntegerField(_("连续失败次数"), default=0)
    last_success_at = models.DateTimeField(_("最近成功"), null=True, blank=True)
    last_failure_at = models.DateTimeField(_("最近失败"), null=True, blank=True)
    last_probe_at = models.DateTimeField(_("最近探测"), null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("创建时间"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("部门回调地址")
        verbose_name_plural = _("部门回调地址")
        ordering = ["department", "created_at"]
        constraints = [
            # What a delivery's (endpoint, department) refers to on PostgreSQL
            # (services 0014): a delivery's department is its endpoint's, and
            # an endpoint with deliveries cannot move to another department.
            models.UniqueConstraint(fields=["id", "department"], name="endpoint_department"),
        ]

    def __str__(self) -> str:
        return f"{self.department.code}: {self.url_shown}"

    @property
    def url_shown(self) -> str:
        """The URL as anyone but its department sees it (query values masked)."""
        return mask_url_query(self.url)

    @property
    def state(self) -> str:
        if self.deleted_at:
            return "deleted"
        if self.held_at:
            return "held"  # the operators' hold first: only they lift it
        if not self.is_active:
            return "disabled"
        if self.paused_at:
            return "paused"
        return "active"


class OutboxEvent(models.Model):
    """Something that happened, written in the same transaction as the change
    itself; delivered to department endpoints and to in-process subscribers.
    Its id is the ``webhook-id`` every delivery of it carries."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    type = models.CharField(_("事件类型"), max_length=64)
    department = models.ForeignKey(
        Department,
        verbose_name=_("接收部门"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="events",
    )
    application = models.ForeignKey(
        Application,
        verbose_name=_("办件"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="events",
    )
    data = EncryptedJSONField(editable=False)
    created_at = models.DateTimeField(_("时间"), default=timezone.now, db_index=True)
    # When in-process subscribers (other apps) have handled it; failed runs
    # are tried again with growing waits.
    handled_at = models.DateTimeField(_("本地处理时间"), null=True, blank=True)
    handle_attempts = models.PositiveIntegerField(_("本地处理失败次数"), default=0)
    handle_after = models.DateTimeField(_("下次本地处理"), null=True, blank=True)

    class Meta:
        verbose_name = _("事件")
        verbose_name_plural = _("事件")
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["handled_at", "created_at"], name="outbox_unhandled"),
            # The pings the daily purge finds among every other event.
            models.Index(
                fields=["created_at"], condition=models.Q(type="ping"), name="outbox_ping_age"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.webhook_id}"

    @property
    def webhook_id(self) -> str:
        return f"msg_{self.id.hex}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", _("待投递")
    SUCCEEDED = "succeeded", _("已送达")
    FAILED = "failed", _("失败（死信）")
    CANCELLED = "cancelled", _("已取消")

    @classmethod
    def finished(cls) -> list[str]:
        """Every status but pending (a delivery leaves pending once, for one of these)."""
        return other_values(cls.PENDING)


class Delivery(models.Model):
    """One event on its way to one endpoint, with every try recorded."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # Neither key has an index of its own: delivery_once_per_endpoint leads
    # with the event, delivery_endpoint_recent with the endpoint (each index
    # costs every insert and every change of status, services 0022-0023).
    event = models.ForeignKey(
        OutboxEvent,
        verbose_name=_("事件"),
        on_delete=models.PROTECT,
        related_name="deliveries",
        db_index=False,
    )
    endpoint = models.ForeignKey(
        Endpoint,
        verbose_name=_("回调地址"),
        on_delete=models.PROTECT,
        related_name="deliveries",
        db_index=False,
    )
    # The endpoint's department, held on the delivery: the department's
    # list is read along indexes of its own (below), newest first, however
    # many deliveries the city has made (through the endpoint, PostgreSQL
    # read and sorted every one of them for each page). Written with the
    # delivery (outbox.event_prepare). On PostgreSQL (services 0014) the pair
    # (endpoint, department) refers to the endpoint's, so the two never
    # differ, and a delivery inserted without it (by code from before it)
    # takes the endpoint's. Indexed only at the head of the lists' indexes.
    department = models.ForeignKey(
        Department,
        verbose_name=_("部门"),
        on_delete=models.PROTECT,
        related_name="deliveries",
        editable=False,
        db_index=False,
    )
    status = models.CharField(
        _("状态"), max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempt_count = models.PositiveIntegerField(_("尝试次数"), default=0)
    # Position in the retry schedule; a replay starts the schedule again.
    schedule_index = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(_("下次尝试"), null=True, blank=True)
    # A worker holding the delivery; expires so a killed worker loses nothing.
    locked_until = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # Events of one application reach an endpoint in the order they happened:
    # a delivery is not sent while one with the same key (the application's
    # id) and a lower sequence to the same endpoint is still pending. Empty
    # for events that belong to no application (pings): those are not ordered.
    ordering_key = models.UUIDField(null=True, blank=True, editable=False)
    sequence = models.PositiveIntegerField(null=True, blank=True, editable=False)
    last_status_code = models.PositiveSmallIntegerField(_("最近状态码"), null=True, blank=True)
    last_error = models.CharField(_("最近错误"), max_length=500, blank=True)
    last_attempt_at = models.DateTimeField(_("最近尝试"), null=True, blank=True)
    succeeded_at = models.DateTimeField(_("送达时间"), null=True, blank=True)
    failed_at = models.DateTimeField(_("进入死信时间"), null=True, blank=True)
    created_at = models.DateTimeField(_("创建时间"), default=timezone.now)

    class Meta:
        verbose_name = _("投递")
        verbose_name_plural = _("投递")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["event", "endpoint"], name="delivery_once_per_endpoint"
            ),
            # Also the index of "is an earlier one still pending?" (see
            # outbox.delivery_waits_for_earlier) and of an application's next
            # sequence number.
            models.UniqueConstraint(
                fields=["ordering_key", "endpoint", "sequence"], name="delivery_in_order"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due"),
            # The department's list (FeedPagination: newest first, then by
            # id) with each combination of its filters, read in its order:
            # no page reads or sorts more rows than it shows.
            models.Index(fields=["department", "-created_at", "-id"], name="delivery_dept_feed"),
            models.Index(
                fields=["department", "status", "-created_at", "-id"],
                name="delivery_dept_status",
            ),
            models.Index(
                fields=["endpoint", "-created_at", "-id"], name="delivery_endpoint_recent"
            ),
            models.Index(
                fields=["endpoint", "status", "-created_at", "-id"],
                name="delivery_endpoint_status",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event.type} → {self.endpoint.url_shown}"


class DeliveryAttempt(models.Model):
    """One HTTP try of a delivery."""

    delivery = models.ForeignKey(
        Delivery, verbose_name=_("投递"), on_delete=models.CASCADE, related_name="attempts"
    )
    number = models.PositiveIntegerField(_("序号"))
    started_at = models.DateTimeField(_("开始时间"))
    duration_ms = models.PositiveIntegerField(_("耗时（毫秒）"))
    status_code = models.PositiveSmallIntegerField(_("状态码"), null=True, blank=True)
    error = models.CharField(_("错误"), max_length=500, blank=True)
    response_body = models.TextField(_("响应（截断）"), blank=True)
    succeeded = models.BooleanField(_("成功"), default=False)

    class Meta:
        verbose_name = _("投递尝试")
        verbose_name_plural = _("投递尝试")
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"#{self.number} {self.status_code or self.error}"
