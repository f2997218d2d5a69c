"""Anyone finds services and reads their guides, without logging in."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from services.models import Service
from tests.services.factories import CategoryFactory, ServiceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_catalog(db):
    call_command("seed_demo", verbosity=0)


def codes(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [item["code"] for item in response.json()["results"]]


def test_departments_and_categories_are_public_lists(api, demo_catalog) -> None:
    departments = api.get("/api/v1/departments/").json()
    assert set(departments) == {"results", "next", "previous"}
    assert len(departments["results"]) >= 8
    assert {"code", "name"} <= set(departments["results"][0])
    categories = codes(api.get("/api/v1/categories/"))
    assert {"shebao", "yibao", "gongjijin", "huji", "jiaotong", "jiaoyu", "wenlv"} <= set(
        categories
    )


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("公积金", "hpf-withdraw-rent"),
        ("gjj", "hpf-loan"),
        ("gongjijin", "hpf-certificate"),
        ("shebao", "sbk-apply"),
        ("社保卡", "sbk-replace"),
        ("sbk", "sbk-apply"),
        ("身份证", "id-card-renew"),
        ("sfz", "id-card-reissue"),
        ("医保 异地", "medicare-remote-filing"),
        ("YLFY", "medicare-reimburse"),
    ],
)
def test_search_matches_name_keywords_and_pinyin(api, demo_catalog, q, expected) -> None:
    assert expected in codes(api.get("/api/v1/services/", {"q": q, "page_size": 100}))


def test_gjj_finds_only_provident_fund_services(api, demo_catalog) -> None:
    found = codes(api.get("/api/v1/services/", {"q": "gjj", "page_size": 100}))
    assert found
    assert all(Service.objects.get(code=code).category.code == "gongjijin" for code in found)


def test_name_matches_come_first(api, demo_catalog) -> None:
    found = codes(api.get("/api/v1/services/", {"q": "社保卡", "page_size": 100}))
    assert found[:2] == sorted(["sbk-apply", "sbk-replace"])


def test_filters_by_category_and_department_codes(api, demo_catalog) -> None:
    by_category = codes(api.get("/api/v1/services/", {"category": "yibao", "page_size": 100}))
    assert by_category and all(code.startswith(("medicare", "chronic")) for code in by_category)
    by_department = codes(api.get("/api/v1/services/", {"department": "police", "page_size": 100}))
    assert "passport" in by_department and "sbk-apply" not in by_department
    both = codes(api.get("/api/v1/services/", {"department": "police", "category": "jiaotong"}))
    assert both == ["driving-license-replace"]
    assert codes(api.get("/api/v1/services/", {"department": "nope"})) == []


def test_the_catalog_pages_by_number(api, demo_catalog) -> None:
    first = api.get("/api/v1/services/", {"page_size": 20}).json()
    assert len(first["results"]) == 20 and first["previous"] is None
    second = api.get(first["next"]).json()
    assert not {r["code"] for r in first["results"]} & {r["code"] for r in second["results"]}
    assert api.get("/api/v1/services/", {"page": 999}).json()["code"] == "pagination_invalid"


def test_listing_costs_the_same_queries_for_ten_or_a_hundred_services(
    api, django_assert_max_num_queries
) -> None:
    for n in range(100):
        ServiceFactory(code=f"bulk-{n}", name=f"批量事项{n}", keywords=["批量"])
    with django_assert_max_num_queries(2):  # count + page
        response = api.get("/api/v1/services/", {"page_size": 100, "q": "pl"})
    assert len(response.json()["results"]) == 100


def test_the_guide_has_every_field(api, demo_catalog) -> None:
    response = api.get("/api/v1/services/id-card-renew/")
    assert response.status_code == 200
    guide = response.json()
    assert set(guide) == {
        "code", "name", "department", "category", "summary", "eligibility", "materials",
        "fee_fen", "time_limit_days", "legal_basis", "channels", "identity_level",
        "form_schema", "keywords", "is_active",
    }  # fmt: skip
    assert guide["department"] == "police" and guide["category"] == "huji"
    assert guide["fee_fen"] == 2000
    assert guide["materials"][0] == {"name": "原居民身份证", "required": True, "note": ""}
    assert guide["form_schema"]["type"] == "object"
    assert response["Cache-Control"] == "public, max-age=60"


def test_offline_services_are_not_found(api) -> None:
    ServiceFactory(code="retired", is_active=False)
    assert api.get("/api/v1/services/retired/").status_code == 404
    assert "retired" not in codes(api.get("/api/v1/services/"))


def test_services_of_an_inactive_category_are_hidden(api) -> None:
    service = ServiceFactory(category=CategoryFactory(code="old", is_active=False))
    assert api.get(f"/api/v1/services/{service.code}/").status_code == 404


def test_an_overlong_query_is_a_400(api) -> None:
    response = api.get("/api/v1/services/", {"q": "x" * 51})
    assert response.status_code == 400
    assert "q" in response.json()["errors"]


def test_english_clients_get_english_errors_from_the_catalog(api) -> None:
    response = api.get("/api/v1/services/nope/", HTTP_ACCEPT_LANGUAGE="en")
    assert response.json()["title"] == "Not found"


def test_a_guide_takes_a_fixed_number_of_statements(
    api, demo_catalog, django_assert_max_num_queries
) -> None:
    for code in ("id-card-renew", "sbk-apply", "id-card-renew"):
        with django_assert_max_num_queries(1):
            assert api.get(f"/api/v1/services/{code}/").status_code == 200
