// A key added from a picker's popup: the picker gets it, as Django's
// popup_response.js would give it, once the operator has copied the token
// and clicked (the page that shows it is the only one that ever will).
"use strict";
{
    document.getElementById("new-key-done").addEventListener("click", function() {
        const data = JSON.parse(document.getElementById("new-key-popup-response").textContent);
        opener.dismissAddRelatedObjectPopup(window, data.value, data.obj);
    });
}
