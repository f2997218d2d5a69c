"""Stable error codes of the catalog, applications and routing."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from config.errors import DomainError, error_code

FORM_INVALID = error_code(
    "form_invalid",
    400,
    _("申请表填写有误"),
    when=_(
        "申请表不符合该事项的表单定义（`form_schema`）：缺少必填项、类型或格式不对；`errors` 按字段列出原因。"
    ),
    what_to_do=_("按 `errors` 请用户改正所列字段后重新提交。"),
)
FORM_SCHEMA_INVALID = error_code(
    "form_schema_invalid",
    400,
    _("申请表定义不是有效的 JSON Schema"),
    when=_(
        "部门提交的申请表定义不是有效的 JSON Schema，或违反了平台的规则（外部引用、过大、过深等）。"
    ),
    what_to_do=_("按 `detail` 改正表单定义后重新提交。"),
)
# A stored form schema that breaks today's rules (saved before them): the
# department has to fix it; the citizen's request was fine.
FORM_SCHEMA_UNUSABLE = error_code(
    "form_schema_unusable",
    409,
    _("申请表定义不是有效的 JSON Schema"),
    when=_("该事项已保存的申请表定义不符合现行规则，暂时无法受理申请；这不是申请人的问题。"),
    what_to_do=_(
        "告知用户该事项暂不可申请；部门需修正表单定义（`python manage.py check_form_schemas` 列出这类定义）。"
    ),
)
SERVICE_NOT_ONLINE = error_code(
    "service_not_online",
    409,
    _("该事项不能网上申请"),
    when=_("该事项的办理渠道（办事指南的 `channels`）不含 `online`：只能到窗口办理或邮寄办理。"),
    what_to_do=_("按办事指南告知用户到窗口或邮寄办理，不要重试。"),
)
GUIDE_INVALID = error_code(
    "guide_invalid",
    400,
    _("办事指南内容有误"),
    when=_(
        "部门提交的办事指南字段有误（例如未知的分类、渠道或材料格式）；`errors` 按字段列出原因。"
    ),
    what_to_do=_("按 `errors` 改正后重新提交。"),
)
SERVICE_CODE_TAKEN = error_code(
    "service_code_taken",
    409,
    _("事项编码已被使用"),
    when=_("事项编码已被另一个事项使用（编码在全市唯一）。"),
    what_to_do=_("换一个编码；要修改已有事项，请用 `PATCH /api/v1/dept/services/{code}/`。"),
)
INVALID_TRANSITION = error_code(
    "invalid_transition",
    409,
    _("当前状态下不能进行此操作"),
    when=_(
        "办件（或订单）的当前状态不允许这个操作，例如撤回已受理的办件，或把已办结的办件改为受理；`current_status` 给出当前状态。"
    ),
    what_to_do=_("重新读取对象的当前状态，按状态机允许的操作继续；不要原样重试。"),
)
RATING_NOT_ALLOWED = error_code(
    "rating_not_allowed",
    409,
    _("办件办结后才能评价，且只能评价一次"),
    when=_("办件尚未办结（`completed` 或 `rejected`），或已经评价过。"),
    what_to_do=_("办结后再评价；每个办件只能评价一次。"),
)
ENDPOINT_URL_INVALID = error_code(
    "endpoint_url_invalid",
    400,
    _("回调地址无效"),
    when=_("回调地址不是有效的 http(s) 地址（缺少主机名、端口不对、带有用户名密码等）。"),
    what_to_do=_("提供完整、可从公网访问的 https 地址。"),
)
ENDPOINT_URL_NOT_ALLOWED = error_code(
    "endpoint_url_not_allowed",
    400,
    _("回调地址不能指向内网、本机或保留地址"),
    when=_(
        "回调地址的主机名无法解析，或指向内网、本机或保留地址（两者答复相同；注册时和每次投递时都会检查解析后的地址）。"
    ),
    what_to_do=_("使用公网可达的地址；不要指向内部网络。"),
)
ENDPOINT_HELD = error_code(
    "endpoint_held",
    409,
    _("回调地址已被平台暂停投递，不能更改地址"),
    when=_("平台运营人员暂停了该回调地址的投递（`state: held`），期间不能更改它的 URL。"),
    what_to_do=_("联系平台运营；运营恢复投递后再更改地址。"),
)
SERVICE_HELD = error_code(
    "service_held",
    409,
    _("该事项已被平台运营人员下线，部门不能自行上线"),
    when=_("平台运营人员下线了该事项，期间部门不能通过接口把它重新上线（其他内容仍可修改）。"),
    what_to_do=_("联系平台运营；运营人员重新上线后即可。"),
)
ENDPOINT_LIMIT_REACHED = error_code(
    "endpoint_limit_reached",
    409,
    _("回调地址数量已达上限"),
    when=_(
        "本部门已有 `ROUTING_MAX_ENDPOINTS` 个回调地址（默认 20 个；已删除的不计）。每个事件都会投递到每个订阅它的地址。"
    ),
    what_to_do=_("删除不用的回调地址，或在一个地址上订阅多种事件；确需更多请联系平台运营。"),
)
DELIVERY_NOT_RETRYABLE = error_code(
    "delivery_not_retryable",
    409,
    _("该投递正在发送或已取消，不能重试"),
    when=_(
        "这次投递正在由投递进程发送，或已随其回调地址的删除而取消。已成功和已失败的投递可以重新投递。"
    ),
    what_to_do=_(
        "等正在进行的发送结束后再查看投递状态，需要时再重新投递；已取消的投递不会再发送。"
    ),
)


class ServicesError(DomainError):
    """A rule of the catalog, applications or routing refused the request."""
