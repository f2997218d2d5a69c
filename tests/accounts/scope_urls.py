"""Probe views for the key scopes (the scoped APIs themselves come with
their apps; these pin down the permission rules on their own)."""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import IsCitizen, IsIntegrator, IsScanner


class Probe(APIView):
    def get(self, request):
        return Response({"department": request.user.department.code})


class CitizenProbe(APIView):
    permission_classes = [IsCitizen]

    def get(self, request):
        return Response({"id": str(request.user.id)})


urlpatterns = [
    path("probe/integrator/", Probe.as_view(permission_classes=[IsIntegrator])),
    path("probe/scanner/", Probe.as_view(permission_classes=[IsScanner])),
    path("probe/citizen/", CitizenProbe.as_view()),
    path("", include("config.urls")),
]
