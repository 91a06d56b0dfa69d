(function () {
  var me = document.currentScript;
  var gen = me && me.getAttribute("data-generation");
  var overlay = null;
  function show(err) {
    if (!overlay) {
      overlay = document.createElement("div");
      overlay.id = "devserve-error-overlay";
      overlay.style.cssText = "position:fixed;inset:0;z-index:2147483647;background:rgba(20,0,0,.92);" +
        "color:#fdd;font:14px/1.4 monospace;padding:24px;overflow:auto;white-space:pre-wrap";
      document.documentElement.appendChild(overlay);
    }
    overlay.textContent = "devserve: reload failed\n\n" + err.error +
      (err.location ? "\n  at " + err.location : "") + (err.traceback ? "\n\n" + err.traceback : "");
  }
  function matches(href, paths) {
    var name = href.split("?")[0].split("/").pop();
    return paths.some(function (p) { return p.split("/").pop() === name; });
  }
  function swapStyles(paths) {
    var links = Array.prototype.slice.call(document.querySelectorAll('link[rel~="stylesheet"]'));
    var hit = links.filter(function (l) { return matches(l.href, paths); });
    (hit.length ? hit : links).forEach(function (link) {
      var url = new URL(link.href, location.href);
      url.searchParams.set("devserve", String(Date.now()));
      var fresh = link.cloneNode();
      fresh.href = url.toString();
      fresh.onload = function () { link.remove(); };
      link.parentNode.insertBefore(fresh, link.nextSibling);
    });
  }
  function reloadPage(paths) {
    // A plain reload revalidates only the page itself: scripts and images it uses would come
    // from the HTTP cache, stale. Fetch the edited ones past the cache first.
    var urls = Array.prototype.slice.call(document.querySelectorAll("script[src], img[src], link[href]"))
      .map(function (el) { return el.src || el.href; })
      .filter(function (url) { return matches(url, paths); });
    Promise.all(urls.map(function (url) {
      return fetch(url, { cache: "reload" }).catch(function () {});
    })).then(function () { location.reload(); });
  }
  function connect() {
    var es = new EventSource("/__devserve__/livereload");
    es.addEventListener("hello", function (e) {
      var info = JSON.parse(e.data);
      if (gen !== null && String(info.generation) !== gen) { location.reload(); return; }
      if (info.error) { show(info.error); }
    });
    es.addEventListener("failed", function (e) { show(JSON.parse(e.data)); });
    es.addEventListener("refresh", function (e) {
      var info = JSON.parse(e.data);
      if (info.kind === "css") { swapStyles(info.paths || []); } else { reloadPage(info.paths || []); }
    });
  }
  connect();
})();
