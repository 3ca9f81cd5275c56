// The review site's only script: the status filter of the index and the GLB hand-over to the
// 3D viewer. Every page reads without it.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var filters = document.getElementById("filters");
  var table = document.getElementById("targets");
  if (filters && table) {
    var buttons = filters.querySelectorAll("button[data-filter]");
    var apply = function (status) {
      buttons.forEach(function (b) { b.setAttribute("aria-pressed", String(b.dataset.filter === status)); });
      table.querySelectorAll("tbody tr").forEach(function (row) {
        row.hidden = status !== "all" && row.dataset.status !== status;
      });
    };
    buttons.forEach(function (b) {
      b.addEventListener("click", function () {
        apply(b.dataset.filter);
        history.replaceState(null, "", b.dataset.filter === "all" ? location.pathname : "#status=" + encodeURIComponent(b.dataset.filter));
      });
    });
    filters.hidden = false;
    var wanted = /^#status=(.+)$/.exec(location.hash);
    apply(wanted ? decodeURIComponent(wanted[1]) : "all");
  }
});

// Called by files/<digest>.glb.js: a page opened from disk may run scripts but not fetch files,
// so the model arrives as base64 and reaches the viewer as a blob: URL.
function buildsysModel(name, base64) {
  "use strict";
  var raw = atob(base64);
  var bytes = new Uint8Array(raw.length);
  for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  var url = URL.createObjectURL(new Blob([bytes], {type: "model/gltf-binary"}));
  document.querySelectorAll("model-viewer[data-model]").forEach(function (viewer) {
    if (viewer.dataset.model === name) viewer.src = url;
  });
}
