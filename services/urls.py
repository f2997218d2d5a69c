"""Services URLs, by area; ``config.urls`` mounts each under its prefix."""

from django.urls import path

from config.pages import catalog_pages
from services.apis import applications, catalog, dept_applications, dept_routing, dept_services

# /api/v1/ (public catalog): pages kept while the catalog is unchanged.
page = catalog_pages.page
catalog_urls = [
    path("departments/", page(catalog.DepartmentListView.as_view()), name="department-list"),
    path("categories/", page(catalog.CategoryListView.as_view()), name="category-list"),
    path("services/", page(catalog.ServiceListView.as_view()), name="service-list"),
    path(
        "services/<slug:code>/",
        page(catalog.ServiceDetailView.as_view()),
        name="service-detail",
    ),
]

# /api/v1/applications/
application_urls = [
    path("", applications.ApplicationListView.as_view(), name="application-list"),
    path(
        "<uuid:application_id>/",
        applications.ApplicationDetailView.as_view(),
        name="application-detail",
    ),
    path(
        "<uuid:application_id>/cancel/",
        applications.ApplicationCancelView.as_view(),
        name="application-cancel",
    ),
    path(
        "<uuid:application_id>/supplement/",
        applications.ApplicationSupplementView.as_view(),
        name="application-supplement",
    ),
    path(
        "<uuid:application_id>/rating/",
        applications.ApplicationRatingView.as_view(),
        name="application-rating",
    ),
]

# /api/v1/dept/
dept_urls = [
    path("services/", dept_services.DeptServiceListView.as_view(), name="dept-service-list"),
    path(
        "services/<slug:code>/",
        dept_services.DeptServiceDetailView.as_view(),
        name="dept-service-detail",
    ),
    path(
        "applications/",
        dept_applications.DeptApplicationListView.as_view(),
        name="dept-application-list",
    ),
    path(
        "applications/<str:number>/",
        dept_applications.DeptApplicationDetailView.as_view(),
        name="dept-application-detail",
    ),
    path(
        "applications/<str:number>/status/",
        dept_applications.DeptApplicationStatusView.as_view(),
        name="dept-application-status",
    ),
    path("endpoints/", dept_routing.EndpointListView.as_view(), name="dept-endpoint-list"),
    path(
        "endpoints/<uuid:endpoint_id>/",
        dept_routing.EndpointDetailView.as_view(),
        name="dept-endpoint-detail",
    ),
    path(
        "endpoints/<uuid:endpoint_id>/rotate-secret/",
        dept_routing.EndpointRotateSecretView.as_view(),
        name="dept-endpoint-rotate-secret",
    ),
    path(
        "endpoints/<uuid:endpoint_id>/test/",
        dept_routing.EndpointTestView.as_view(),
        name="dept-endpoint-test",
    ),
    path("deliveries/", dept_routing.DeliveryListView.as_view(), name="dept-delivery-list"),
    path(
        "deliveries/<uuid:delivery_id>/",
        dept_routing.DeliveryDetailView.as_view(),
        name="dept-delivery-detail",
    ),
    path(
        "deliveries/<uuid:delivery_id>/retry/",
        dept_routing.DeliveryRetryView.as_view(),
        name="dept-delivery-retry",
    ),
]
