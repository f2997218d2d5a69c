"""The public catalog is answered from memory while it is unchanged, and
every way it changes shows at once."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings

from accounts.departments import department_ensure
from accounts.models import Department
from config import pages
from config.pages import PublicPages, catalog_pages
from services import catalog
from services.models import Category, Service
from tests.services.factories import ServiceFactory

pytestmark = pytest.mark.django_db

LIST = "/api/v1/services/"


@pytest.fixture
def demo_catalog(db) -> None:
    call_command("seed_demo", verbosity=0)


def names(api, url: str = LIST, **params: Any) -> dict[str, str]:
    response = api.get(url, {"page_size": 100, **params})
    assert response.status_code == 200, response.content
    return {item["code"]: item["name"] for item in response.json()["results"]}


@pytest.mark.integration  # pages are kept with Redis only
def test_a_page_asked_again_costs_no_statement(
    api, demo_catalog, django_assert_num_queries
) -> None:
    first = api.get(LIST)
    guide = api.get("/api/v1/services/id-card-renew/")
    with django_assert_num_queries(0):
        again = api.get(LIST)
        guide_again = api.get("/api/v1/services/id-card-renew/")
    assert guide.status_code == 200 and guide_again.content == guide.content
    assert again.content == first.content
    assert again["ETag"] == first["ETag"] and again["Cache-Control"] == "public, max-age=60"
    assert again["Content-Type"] == first["Content-Type"] == "application/json"


def test_a_client_holding_the_etag_gets_a_304_without_body(api, demo_catalog) -> None:
    first = api.get(LIST)
    etag = first["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    not_modified = api.get(LIST, HTTP_IF_NONE_MATCH=etag)
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified["ETag"] == etag
    assert not_modified["Cache-Control"] == "public, max-age=60"
    # A list of tags, weak or not, as HTTP allows; another tag gets the page.
    assert api.get(LIST, HTTP_IF_NONE_MATCH=f'"x", W/{etag}').status_code == 304
    assert api.get(LIST, HTTP_IF_NONE_MATCH='"other"').status_code == 200


def test_an_if_match_naming_another_page_is_a_problem(api, demo_catalog) -> None:
    """A client editing on top of a page it read (If-Match) learns the page
    changed: 412 as a problem with its code, like every other refusal."""
    etag = api.get(LIST)["ETag"]
    assert api.get(LIST, HTTP_IF_MATCH=etag).status_code == 200
    for _ in range(2):  # rendered, then kept
        refused = api.get(LIST, HTTP_IF_MATCH='"another"', HTTP_ACCEPT_LANGUAGE="en")
        assert refused.status_code == 412
        assert refused["Content-Type"] == "application/problem+json"
        assert refused.json()["code"] == "precondition_failed"
        assert refused.json()["title"] == "The resource has changed"
        assert refused["ETag"] == etag


def test_the_etag_follows_the_body_not_the_rest_of_the_catalog(
    api, demo_catalog, django_capture_on_commit_callbacks
) -> None:
    guide = api.get("/api/v1/services/id-card-renew/")
    listing = api.get(LIST, {"page_size": 100})
    # Another service changes: the list changes, this guide does not.
    other = Service.objects.get(code="sbk-apply")
    with django_capture_on_commit_callbacks(execute=True):
        catalog.service_update(service=other, actor=None, name="社会保障卡申领（新）")
    assert api.get("/api/v1/services/id-card-renew/")["ETag"] == guide["ETag"]
    assert api.get(LIST, {"page_size": 100})["ETag"] != listing["ETag"]


def test_addresses_languages_and_queries_are_kept_apart(api, demo_catalog) -> None:
    plain = api.get(LIST).json()
    second = api.get(LIST, {"page": 2}).json()
    search = names(api, q="gjj")
    assert plain != second and plain["next"].startswith("http://testserver/")
    assert set(search) and all("公积金" in name for name in search.values())
    other_host = api.get(LIST, HTTP_HOST="localhost").json()
    assert other_host["next"].startswith("http://localhost/")
    english = api.get("/api/v1/services/nope/", HTTP_ACCEPT_LANGUAGE="en")
    assert english.status_code == 404 and english.json()["title"] == "Not found"
    assert api.get("/api/v1/services/nope/").json()["title"] != "Not found"


def test_errors_are_never_kept(api, demo_catalog) -> None:
    assert api.get(LIST, {"page": 999}).status_code == 400
    # A 404 for a service not there yet is not remembered.
    assert api.get("/api/v1/services/late-comer/").status_code == 404
    ServiceFactory(code="late-comer")
    assert api.get("/api/v1/services/late-comer/").status_code == 200


# --- Every way the catalog changes shows at once ------------------------------------------


def _via_function(api, integrator_api, operator_client) -> Callable[[], None]:
    def change() -> None:
        service = Service.objects.get(code="mine")
        catalog.service_update(service=service, actor=None, name="居民身份证换领（新）")

    return change


def _via_department_api(api, integrator_api, operator_client) -> Callable[[], None]:
    def change() -> None:
        response = integrator_api.patch(
            "/api/v1/dept/services/mine/", {"name": "居民身份证换领（新）"}, format="json"
        )
        assert response.status_code == 200, response.json()

    return change


def _via_admin_form(api, integrator_api, operator_client) -> Callable[[], None]:
    def change() -> None:
        service = Service.objects.get(code="mine")
        form = catalog.service_as_record(service)
        data = {
            **{k: v for k, v in form.items() if k not in ("code", "department")},
            "category": service.category_id,
            "name": "居民身份证换领（新）",
        }
        for name in ("materials", "channels", "form_schema", "keywords"):
            data[name] = json.dumps(data[name], ensure_ascii=False)
        data["is_active"] = "on"
        response = operator_client.post(f"/admin/services/service/{service.pk}/change/", data)
        assert response.status_code == 302, response.content.decode()[:2000]

    return change


def _via_admin_take_offline(api, integrator_api, operator_client) -> Callable[[], None]:
    def change() -> None:
        service = Service.objects.get(code="mine")
        operator_client.post(
            "/admin/services/service/",
            {"action": "take_offline", "_selected_action": [service.pk]},
        )

    return change


def _via_admin_delete(api, integrator_api, operator_client) -> Callable[[], None]:
    def change() -> None:
        service = Service.objects.get(code="mine")
        response = operator_client.post(
            f"/admin/services/service/{service.pk}/delete/", {"post": "yes"}
        )
        assert response.status_code == 302

    return change


def _via_import(api, integrator_api, operator_client) -> Callable[[], None]:
    def change() -> None:
        record = catalog.service_as_record(Service.objects.get(code="mine"))
        catalog.catalog_import([{**record, "name": "居民身份证换领（新）"}], actor=None)

    return change


@pytest.mark.parametrize(
    "how",
    [
        _via_function,
        _via_department_api,
        _via_admin_form,
        _via_admin_take_offline,
        _via_admin_delete,
        _via_import,
    ],
)
def test_a_service_changed_any_way_shows_at_once(
    how,
    api,
    integrator_api,
    operator_client,
    department,
    category,
    django_capture_on_commit_callbacks,
) -> None:
    ServiceFactory(code="mine", name="居民身份证换领", department=department, category=category)
    change = how(api, integrator_api, operator_client)
    before = names(api)
    guide_before = api.get("/api/v1/services/mine/").json()
    with django_capture_on_commit_callbacks(execute=True):  # as it commits
        change()
    after = names(api)
    guide_after = api.get("/api/v1/services/mine/")
    assert after != before
    assert guide_after.status_code == 404 or guide_after.json() != guide_before


def test_categories_and_departments_changed_any_way_show_at_once(
    api, operator_client, department, category, django_capture_on_commit_callbacks
) -> None:
    committed = django_capture_on_commit_callbacks
    ServiceFactory(code="mine", department=department, category=category)
    assert "mine" in names(api)
    departments = names(api, "/api/v1/departments/")
    categories = names(api, "/api/v1/categories/")

    with committed(execute=True):
        department_ensure(code=department.code, name="新的部门名称")
    assert names(api, "/api/v1/departments/")[department.code] == "新的部门名称"
    with committed(execute=True):
        department_ensure(code="brand-new", name="新设部门")
    assert set(names(api, "/api/v1/departments/")) == {*departments, "brand-new"}

    with committed(execute=True):
        catalog.category_ensure(code=category.code, name="新的分类名称")
    assert names(api, "/api/v1/categories/")[category.code] == "新的分类名称"

    # The admin: a category taken offline hides its services; so does a department.
    with committed(execute=True):
        response = operator_client.post(
            f"/admin/services/category/{category.pk}/change/",
            {"code": category.code, "name": "新的分类名称", "name_en": "", "sort_order": 0},
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert category.code not in names(api, "/api/v1/categories/")
    assert "mine" not in names(api)
    assert set(categories) - {category.code} <= set(names(api, "/api/v1/categories/"))
    Category.objects.filter(pk=category.pk).update(is_active=True)
    with committed(execute=True):
        catalog_pages.bump()
    assert "mine" in names(api)

    data = {
        "code": department.code,
        "name": "新的部门名称",
        "name_en": "",
        "contact_phone": "",
        "is_active": "",
    }
    with committed(execute=True):
        response = operator_client.post(f"/admin/accounts/department/{department.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not Department.objects.get(pk=department.pk).is_active
    assert department.code not in names(api, "/api/v1/departments/")
    assert "mine" not in names(api)


@pytest.mark.integration  # pages are kept with Redis only
def test_a_change_made_while_a_page_renders_is_not_hidden_by_it(api, demo_catalog) -> None:
    """The version is read before rendering: a bump that lands during the
    render leaves the rendered page under the old version."""
    pages_here = PublicPages("mid-render")
    calls: list[int] = []

    def view(request):
        from django.http import JsonResponse

        calls.append(1)
        if len(calls) == 1:
            pages_here._bump_now()  # another process commits a change now
        return JsonResponse({"call": len(calls)})

    served = pages_here.page(view)
    from django.test import RequestFactory

    request = RequestFactory().get("/x/")
    assert served(request).content == b'{"call": 1}'
    assert served(RequestFactory().get("/x/")).content == b'{"call": 2}'
    assert served(RequestFactory().get("/x/")).content == b'{"call": 2}'


def test_pages_are_rendered_again_after_public_page_seconds(api, demo_catalog) -> None:
    api.get(LIST)
    Service.objects.filter(code="id-card-renew").update(name="不经写入函数的改动")
    with override_settings(PUBLIC_PAGE_SECONDS=0):
        assert "不经写入函数的改动" in api.get(LIST, {"page_size": 100}).content.decode()


@pytest.mark.integration  # pages are kept with Redis only
def test_the_store_is_bounded(demo_catalog) -> None:
    from django.http import JsonResponse
    from django.test import RequestFactory

    small = PublicPages("small", max_entries=3)
    served = small.page(lambda request: JsonResponse({"path": request.path}))
    for n in range(10):
        served(RequestFactory().get(f"/p/{n}/"))
    assert len(small._pages) == 3


def test_only_get_is_kept(api, demo_catalog) -> None:
    assert api.post(LIST, {}, format="json").status_code == 405
    assert api.head(LIST).status_code == 200


@pytest.mark.integration
def test_without_redis_pages_are_rendered_each_time(api, demo_catalog, monkeypatch) -> None:
    api.get(LIST)

    class Away:
        def __getattr__(self, name: str) -> Any:
            raise ConnectionError("Redis is away")

    monkeypatch.setattr(pages, "redis_client", lambda: Away())
    Service.objects.filter(code="id-card-renew").update(name="Redis 不在时的改动")
    response = api.get(LIST, {"page_size": 100})
    assert response.status_code == 200
    assert "Redis 不在时的改动" in response.content.decode()


@pytest.mark.integration
def test_a_bump_in_one_process_reaches_the_others(api, demo_catalog) -> None:
    """Another web process's store: a PublicPages of the same name sharing
    the version in Redis."""
    from django.http import JsonResponse
    from django.test import RequestFactory

    state = {"n": 0}

    def view(request):
        state["n"] += 1
        return JsonResponse({"n": state["n"]})

    here, there = PublicPages("shared"), PublicPages("shared")
    served_there = there.page(view)
    assert served_there(RequestFactory().get("/s/")).content == b'{"n": 1}'
    assert served_there(RequestFactory().get("/s/")).content == b'{"n": 1}'
    here._bump_now()
    assert served_there(RequestFactory().get("/s/")).content == b'{"n": 2}'


def test_without_redis_pages_are_never_kept(
    api, demo_catalog, settings, django_assert_max_num_queries
) -> None:
    """Without Redis, web processes and commands share no version: every
    request renders, and the ETag still spares the client the body."""
    settings.REDIS_URL = ""
    first = api.get(LIST)
    Service.objects.filter(code="id-card-renew").update(name="不经写入函数的改动")
    second = api.get(LIST, {"page_size": 100})
    assert "不经写入函数的改动" in second.content.decode()
    assert api.get(LIST, HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 200  # changed
    assert api.get(LIST, HTTP_IF_NONE_MATCH=api.get(LIST)["ETag"]).status_code == 304
