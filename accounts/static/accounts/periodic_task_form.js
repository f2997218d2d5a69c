// The periodic task form: the chosen crontab in words under its field
// (django-celery-beat's inline script, as a file the pages' policy allows).
"use strict";
{
    const $ = django.jQuery;
    const readable = JSON.parse($("#readable-crontabs").text());
    const help = $(".field-crontab .help");
    const original = help.text();
    $(".field-crontab_translation").hide();
    $(".field-crontab").change(function() {
        const words = readable[$("#id_crontab").val()];
        help.text(original);
        if (words) {
            help.append($("<br>"), document.createTextNode("Translation: " + words));
        }
    });
}
