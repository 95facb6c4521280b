// The console's own script. The overview draws its orders-per-minute chart with uPlot from
// the figures the page embeds, then keeps every figure current from the server-sent event
// stream, without reloading. Text goes in with textContent, never as HTML.
(function () {
  "use strict";
  var data = document.getElementById("overview-data");
  if (!data) return;
  var figures = JSON.parse(data.textContent);
  var el = document.getElementById("orders-chart");
  var chart = null;

  function series(f) { return [f.per_minute.t, f.per_minute.n]; }

  function draw(f) {
    if (typeof uPlot === "undefined") return;
    var opts = {
      width: Math.max(el.clientWidth, 320),
      height: 220,
      scales: { x: { time: true } },
      series: [{}, { label: "Orders", stroke: "#2563eb", fill: "rgba(37,99,235,0.15)", width: 2 }],
      axes: [{}, { label: "orders / min" }],
    };
    chart = new uPlot(opts, series(f), el);
  }

  function text(id, value) {
    var node = document.getElementById(id);
    if (node) node.textContent = String(value);
  }

  function rows(tableId, items, cells) {
    var body = document.querySelector("#" + tableId + " tbody");
    if (!body) return;
    while (body.firstChild) body.removeChild(body.firstChild);
    items.forEach(function (item) {
      var tr = document.createElement("tr");
      cells(item).forEach(function (c, i) {
        var td = document.createElement(i === 0 && tableId === "funnel" ? "th" : "td");
        if (typeof c === "number") td.className = "num";
        td.textContent = String(c);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function render(f) {
    text("orders-count", f.orders);
    text("position", f.position);
    var revenue = document.getElementById("revenue");
    if (revenue) {
      while (revenue.firstChild) revenue.removeChild(revenue.firstChild);
      f.revenue.forEach(function (r) {
        var li = document.createElement("li");
        li.textContent = r.text;
        revenue.appendChild(li);
      });
    }
    rows("funnel", f.funnel, function (s) { return [s.step, s.count]; });
    rows("top", f.top, function (p) { return [p.sku, p.units, p.revenue]; });
    rows("stock", f.stock, function (w) { return [w.warehouse, w.on_hand, w.reserved, w.available]; });
    var total = f.per_minute.n.reduce(function (a, b) { return a + b; }, 0);
    el.setAttribute("data-total", String(total));
    if (chart) chart.setData(series(f)); else draw(f);
    document.body.setAttribute("data-updates", String(Number(document.body.getAttribute("data-updates") || 0) + 1));
  }

  function start() {
    draw(figures);
    var source = new EventSource("/console/overview/stream");
    source.addEventListener("overview", function (e) { render(JSON.parse(e.data)); });
    source.addEventListener("open", function () { document.body.setAttribute("data-live", "yes"); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
