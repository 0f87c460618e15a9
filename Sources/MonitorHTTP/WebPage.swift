// The page at `/`: a minimal built-in table, until the MonitorWeb target's page is wired in.
enum WebPage {
    static let html = """
    <!doctype html><html><head><meta charset="utf-8"><title>edge-monitor</title>
    <style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style></head>
    <body><h1>edge-monitor</h1><table><thead><tr><th>gateway</th><th>state</th><th>boot</th>
    <th>backlog</th><th>dropped</th><th>lost</th></tr></thead><tbody id="rows"></tbody></table>
    <script>
    async function load(){
      const fleet=await (await fetch('/api/fleet')).json();
      const rows=document.getElementById('rows');rows.replaceChildren();
      for(const g of fleet.gateways){
        const tr=document.createElement('tr');tr.dataset.gateway=g.id;tr.dataset.state=g.state;
        for(const v of [g.id,g.state,g.boot??'',g.backlog.messages,g.dropped,g.lost]){
          const td=document.createElement('td');td.textContent=String(v);tr.appendChild(td);}
        rows.appendChild(tr);}
    }
    load();setInterval(load,2000);
    </script></body></html>
    """
}
