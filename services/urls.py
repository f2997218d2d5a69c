from django.urls import path

from services.apis import catalog, dept_services

urlpatterns = [
    path("departments/", catalog.DepartmentListView.as_view(), name="department-list"),
    path("categories/", catalog.CategoryListView.as_view(), name="category-list"),
    path("services/", catalog.ServiceListView.as_view(), name="service-list"),
    path("services/<slug:code>/", catalog.ServiceDetailView.as_view(), name="service-detail"),
    path("dept/services/", dept_services.DeptServiceListView.as_view(), name="dept-service-list"),
    path(
        "dept/services/<slug:code>/",
        dept_services.DeptServiceDetailView.as_view(),
        name="dept-service-detail",
    ),
]
