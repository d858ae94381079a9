// reprise report: draws the lanes from the JSON in #data as SVG, only what
// is visible; zoomed out, each lane's consecutive events closer than GAP
// pixels become one bar.
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('data').textContent);
  const F = 6, N = D.ev.length / F, L = D.lanes.length;
  const LABEL = 92, RIGHT = 96, TOP = 24, LH = 40, GAP = 4, DETAIL = 6, MAXP = 140;
  const CATS = ['lock', 'unlock', 'cond / barrier / once', 'thread create, start, exit, join',
    'fork / process start', 'system call', 'signal', 'exit'];
  const HEIGHT = [18, 18, 16, 24, 24, 11, 20, 24];
  const $ = (id) => document.getElementById(id);
  const svg = $('chart'), wrap = $('timeline'), tip = $('tip');
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

  // Columns, and each lane's events.
  const SEQ = new Float64Array(N), LANE = new Int32Array(N), NAME = new Int32Array(N);
  const cnt = new Int32Array(L);
  for (let i = 0, k = 0; i < N; i++, k += F) {
    SEQ[i] = D.ev[k]; LANE[i] = D.ev[k + 1]; NAME[i] = D.ev[k + 2]; cnt[LANE[i]]++;
  }
  const BY = [], fillp = new Int32Array(L);
  for (let l = 0; l < L; l++) BY.push(new Int32Array(cnt[l]));
  for (let i = 0; i < N; i++) { const l = LANE[i]; BY[l][fillp[l]++] = i; }
  const cat = (i) => D.cats[NAME[i]];
  // Positions (X): an event takes one step; an observed access between
  // two events takes two, so that a flip's arrow has room; the failure
  // comes after the last (XN).
  const A = D.acc.length, XN = N + 2 * A, X = new Float64Array(N);
  {
    const order = D.acc.map((a, m) => m).sort((p, q) => D.acc[p].x - D.acc[q].x);
    order.forEach((m, k) => { D.acc[m].X = Math.ceil(D.acc[m].x) + 2 * k + 0.5; });
    let k = 0;
    for (let i = 0; i < N; i++) { while (k < A && D.acc[order[k]].x < i) k++; X[i] = i + 2 * k; }
  }
  // A lock and its unlock (same lane and object), for the held spans.
  const PAIR = new Int32Array(N).fill(-1);
  {
    const open = new Map(), S = D.strings.length;
    const paired = D.names.map((n, k) => (D.cats[k] === 0 || D.cats[k] === 1) && /lock/.test(n));
    for (let i = 0, k = 0; i < N; i++, k += F) {
      if (!paired[NAME[i]]) continue;
      const c = cat(i), key = LANE[i] * S + D.ev[k + 3];
      if (c === 0 && D.ev[k + 4] === 0) {
        const st = open.get(key); if (st) st.push(i); else open.set(key, [i]);
      } else if (c === 1) {
        const st = open.get(key); const j = st && st.pop();
        if (j !== undefined) { PAIR[j] = i; PAIR[i] = j; }
      }
    }
    // Still held at the end (-2): the span runs to the failure.
    for (const st of open.values()) for (const i of st) PAIR[i] = -2;
  }
  const procOf = (l) => D.lanes[l].split(' ')[0];
  const failing = new Set(D.failure && D.failure.failed ? D.failure.lanes : []);
  const accOf = (race) => D.acc.map((a, m) => [a, m]).filter(([a]) => a.race === race);

  // The view: x0 is the event position at the plot's left edge.
  let x0 = -1, ppe = 1, hit = -1, focusRace = null, frame = 0;
  const plotW = () => Math.max(120, wrap.clientWidth - LABEL - RIGHT);
  const minP = () => plotW() / (XN + 2);
  const clampView = () => {
    ppe = Math.min(MAXP, Math.max(minP(), ppe));
    const span = plotW() / ppe;
    x0 = Math.max(-1, Math.min(x0, XN + 1 - span));
  };
  const sx = (x) => LABEL + (x - x0) * ppe;
  const lowerX = (ev, v) => { let lo = 0, hi = ev.length; while (lo < hi) { const m = (lo + hi) >> 1; if (X[ev[m]] < v) lo = m + 1; else hi = m; } return lo; };
  const lower = (arr, v) => { let lo = 0, hi = arr.length; while (lo < hi) { const m = (lo + hi) >> 1; if (arr[m] < v) lo = m + 1; else hi = m; } return lo; };
  const f1 = (v) => v.toFixed(1);

  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1))));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  function axis(out, x1, H) {
    const step = niceStep(90 / ppe);
    out.push('<g class="axis">');
    for (let t = Math.ceil(lower(X, x0) / step) * step; t < N && X[t] <= x1; t += step) {
      const x = f1(sx(X[t]));
      out.push(`<line x1="${x}" y1="${TOP - 6}" x2="${x}" y2="${H}"/><text x="${x}" y="${TOP - 9}" text-anchor="middle">#${SEQ[t]}</text>`);
    }
    out.push('</g>');
  }

  function marks(out, l, y, x1) {
    const ev = BY[l], mid = y + LH / 2;
    const a = lowerX(ev, Math.floor(x0) - 1), b = lowerX(ev, Math.ceil(x1) + 2);
    if (ev.length) {
      const s = Math.max(X[ev[0]], x0 - 1), e = Math.min(X[ev[ev.length - 1]], x1 + 1);
      if (s < e) out.push(`<line class="life" x1="${f1(sx(s))}" y1="${mid}" x2="${f1(sx(e))}" y2="${mid}"/>`);
    }
    if (ppe >= DETAIL) {
      for (let k = a; k < b; k++) {
        const i = ev[k], j = PAIR[i];
        if (j === -1) continue;
        if (cat(i) === 0 || j < ev[a]) {
          const s = Math.max(X[Math.min(i, j < 0 ? i : j)], x0 - 1);
          const e = Math.min(j < 0 ? XN : X[Math.max(i, j)], x1 + 1);
          out.push(`<rect class="held" x="${f1(sx(s))}" y="${mid - 5}" width="${f1(Math.max(0, (e - s) * ppe))}" height="10"/>`);
        }
      }
      const w = Math.min(12, Math.max(3, ppe * 0.55));
      for (let k = a; k < b; k++) {
        const i = ev[k], c = cat(i), h = HEIGHT[c];
        out.push(`<rect class="ev c${c}" data-i="${i}" x="${f1(sx(X[i]) - w / 2)}" y="${mid - h / 2}" width="${f1(w)}" height="${h}" rx="1.5"/>`);
        if (ppe >= 56) {
          const n = D.names[NAME[i]].replace(/^pthread_/, '');
          out.push(`<text class="ev-label" x="${f1(sx(X[i]))}" y="${k % 2 ? mid + 19 : mid - 12}" text-anchor="middle">${esc(n.length > 14 ? n.slice(0, 13) + '…' : n)}</text>`);
        }
      }
      return;
    }
    // Zoomed out: runs of events closer than GAP pixels are one bar.
    const counts = new Int32Array(CATS.length);
    for (let k = a; k < b;) {
      const start = k, px = sx(X[ev[k]]);
      let end = px;
      counts.fill(0);
      while (k < b && sx(X[ev[k]]) - end < GAP) { end = sx(X[ev[k]]); counts[cat(ev[k])]++; k++; }
      const n = k - start;
      if (n > 1) { counts[0] += counts[1]; counts[1] = 0; }
      let dom = 0;
      for (let c = 1; c < CATS.length; c++) if (counts[c] > counts[dom]) dom = c;
      if (n === 1) {
        const h = HEIGHT[dom];
        out.push(`<rect class="ev c${dom}" data-i="${ev[start]}" x="${f1(px - 1.5)}" y="${mid - h / 2}" width="3" height="${h}"/>`);
        continue;
      }
      const dens = n / (ev[k - 1] - ev[start] + 1);
      out.push(`<rect class="agg c${dom}" data-l="${l}" data-a="${start}" data-b="${k}" x="${f1(px - 1.5)}" y="${mid - 9}" width="${f1(end - px + 3)}" height="18" rx="2" opacity="${(0.35 + 0.65 * dens).toFixed(2)}"/>`);
    }
  }

  function accesses(out, x1) {
    D.acc.forEach((m, k) => {
      if (m.X < x0 - 2 || m.X > x1 + 2) return;
      const cls = `acc ${m.write ? 'write' : 'read'}${m.race === null ? ' plain' : ''}${focusRace !== null && m.race === focusRace ? ' focus' : ''}`;
      const y = TOP + m.lane * LH + LH / 2;
      out.push(`<g class="${cls}" data-acc="${k}" transform="translate(${f1(sx(m.X))},${y})"><path d="M0 -10 L8 0 L0 10 L-8 0Z"/>` +
        (m.label ? `<text x="9" y="-9">${esc(m.label)} ${m.write ? 'W' : 'R'}</text>` : '') + '</g>');
    });
  }

  function flips(out) {
    D.flips.forEach((f, k) => {
      const h = D.acc[f.held], u = D.acc[f.until];
      const hx = sx(h.X), hy = TOP + h.lane * LH + LH / 2, ux = sx(u.X), uy = TOP + u.lane * LH + LH / 2;
      const dx = Math.max(40, Math.abs(hx - ux) / 2);
      const d = `M${f1(hx - 8)} ${hy} C${f1(hx - dx)} ${hy} ${f1(ux + dx)} ${uy} ${f1(ux + 10)} ${uy}`;
      out.push(`<path class="flip" data-flip="${k}" d="${d}" marker-end="url(#arrow)"/>`);
      const lx = (hx + ux) / 2, ly = (hy + uy) / 2 + (hy === uy ? -14 : 0);
      if (Math.abs(hx - ux) > 90 || Math.abs(hy - uy) > LH) out.push(`<text class="flip-label" x="${f1(lx)}" y="${ly - 4}" text-anchor="middle">flip ${k + 1}: waits for</text>`);
    });
  }

  function failure(out, H) {
    if (!D.failure) return;
    const x = sx(XN);
    out.push(`<line class="end-line" x1="${f1(x)}" y1="${TOP - 4}" x2="${f1(x)}" y2="${H}"/>`);
    for (const l of D.failure.lanes) {
      const y = TOP + l * LH + LH / 2;
      out.push(`<g class="failure-mark${D.failure.failed ? '' : ' ok'}" transform="translate(${f1(x)},${y})"><circle r="9"/><path d="M-4 -4 L4 4 M4 -4 L-4 4"/>` +
        `<text x="13" y="4">${esc(D.failure.short)}</text></g>`);
    }
  }

  // The overview: the whole run, small, once; the brush is the view.
  const OV = { lh: Math.max(3, Math.min(9, Math.floor(90 / Math.max(1, L)))), top: 4 };
  const ovsvg = $('overview');
  let ovS = 1;
  const ovX = (x) => LABEL + (x + 1) * ovS;
  function overview() {
    const W = wrap.clientWidth, H = OV.top * 2 + L * OV.lh;
    ovS = plotW() / (XN + 2);
    const out = [];
    for (let l = 0; l < L; l++) {
      const ev = BY[l], y = OV.top + l * OV.lh;
      out.push(`<text class="ov-label" x="8" y="${y + OV.lh - 1}">${L <= 24 ? esc(D.lanes[l]) : ''}</text>`);
      for (let k = 0; k < ev.length;) {
        const px = ovX(X[ev[k]]);
        let end = px, c = cat(ev[k]), q;
        while (k < ev.length && (q = LABEL + (X[ev[k]] + 1) * ovS) - end < 2) { end = q; k++; }
        out.push(`<rect class="c${c}" x="${f1(px - 0.5)}" y="${y + 1}" width="${f1(end - px + 1.5)}" height="${OV.lh - 2}"/>`);
      }
    }
    for (const m of D.acc) out.push(`<rect class="ov-acc" x="${f1(ovX(m.X) - 1)}" y="0" width="2" height="${H}"/>`);
    if (D.failure) for (const l of D.failure.lanes) out.push(`<circle class="ov-fail${D.failure.failed ? '' : ' ok'}" cx="${f1(ovX(XN))}" cy="${OV.top + l * OV.lh + OV.lh / 2}" r="${Math.max(2.5, OV.lh / 2)}"/>`);
    out.push(`<rect id="brush" x="0" y="0" width="0" height="${H}"/>`);
    ovsvg.setAttribute('width', W);
    ovsvg.setAttribute('height', H);
    ovsvg.innerHTML = out.join('');
  }
  function brush() {
    const b = $('brush'); if (!b) return;
    const a = ovX(x0), e = ovX(x0 + plotW() / ppe);
    b.setAttribute('x', f1(a)); b.setAttribute('width', f1(Math.max(3, e - a)));
  }

  function render() {
    frame = 0;
    clampView();
    const W = wrap.clientWidth, pw = plotW(), x1 = x0 + pw / ppe, H = TOP + L * LH + 8;
    const out = [`<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10z" fill="#d53f8c"/></marker>` +
      `<clipPath id="plot"><rect x="${LABEL}" y="0" width="${pw + RIGHT}" height="${H}"/></clipPath></defs>`];
    for (let l = 0; l < L; l++) {
      const y = TOP + l * LH, fn = (D.lane_fns || [])[l] || '';
      const cls = 'lane' + (l % 2 ? ' odd' : '') + (failing.has(l) ? ' failing' : '') + (l > 0 && procOf(l) !== procOf(l - 1) ? ' proc-start' : '');
      out.push(`<g class="${cls}" data-thread="${esc(D.lanes[l])}" data-lane="${l}"><rect class="lane-bg" x="0" y="${y}" width="${W}" height="${LH}"/>` +
        `<line class="lane-sep" x1="0" y1="${y}" x2="${W}" y2="${y}"/><text class="lane-label" x="8" y="${y + LH / 2 + (fn ? 0 : 4)}">${esc(D.lanes[l])}${failing.has(l) ? ' ✖' : ''}</text>` +
        (fn ? `<text class="lane-fn" x="8" y="${y + LH / 2 + 12}">${esc(fn.length > 13 ? fn.slice(0, 12) + '…' : fn)}</text>` : '') + '<g clip-path="url(#plot)">');
      marks(out, l, y, x1);
      out.push('</g></g>');
    }
    out.push('<g clip-path="url(#plot)">');
    axis(out, x1, H);
    failure(out, H);
    flips(out);
    accesses(out, x1);
    if (hit >= 0) {
      const y = TOP + LANE[hit] * LH + LH / 2;
      out.push(`<rect class="hit" x="${f1(sx(X[hit]) - 9)}" y="${y - 16}" width="18" height="32" rx="3"/>`);
    }
    out.push('</g>');
    svg.setAttribute('width', W);
    svg.setAttribute('height', H);
    svg.innerHTML = out.join('');
    const span = Math.min(N, pw / ppe);
    brush();
    $('zoom-level').textContent = `${Math.round(span)} of ${N} events in view`;
  }
  const later = () => { if (!frame) frame = requestAnimationFrame(render); };

  function zoomAt(px, factor) {
    const at = x0 + (px - LABEL) / ppe;
    ppe = Math.min(MAXP, Math.max(minP(), ppe * factor));
    x0 = at - (px - LABEL) / ppe;
    later();
  }

  function show(i) {
    hit = i;
    ppe = Math.max(ppe, 16);
    x0 = X[i] - plotW() / ppe / 2;
    render();
    const y = TOP + LANE[i] * LH;
    const r = wrap.getBoundingClientRect();
    if (r.top + y < 0 || r.top + y > innerHeight - 40) window.scrollTo(0, scrollY + r.top + y - innerHeight / 2);
    $('found').textContent = `event #${SEQ[i]}: ${D.lanes[LANE[i]]} ${D.strings[D.ev[i * F + 5]]}`;
    document.body.dataset.found = String(SEQ[i]);
  }

  function find(q, from) {
    q = q.trim();
    if (!q) return -1;
    const m = /^#?(\d+)$/.exec(q);
    if (m) { const i = lower(SEQ, +m[1]); return i < N ? i : N - 1; }
    const ql = q.toLowerCase();
    const nm = D.names.map((n) => n.toLowerCase().includes(ql));
    const sm = D.strings.map((s) => s.toLowerCase().includes(ql));
    for (let k = 0; k < N; k++) {
      const i = (from + 1 + k) % N;
      if (nm[NAME[i]] || sm[D.ev[i * F + 5]] || D.lanes[LANE[i]] === ql) return i;
    }
    return -1;
  }

  function search() {
    const i = find($('search').value, hit);
    if (i < 0) { $('found').textContent = 'no event matches'; delete document.body.dataset.found; return; }
    show(i);
  }

  function tipFor(t) {
    const el = t.closest('[data-i],[data-a],[data-acc],[data-flip],.failure-mark');
    if (!el) return null;
    if (el.dataset.i !== undefined) {
      const i = +el.dataset.i, k = i * F;
      const obj = D.strings[D.ev[k + 3]];
      return `<b>event #${SEQ[i]}</b> · ${esc(D.lanes[LANE[i]])}<br>kind: ${esc(D.names[NAME[i]])}` +
        (obj ? `<br>object: ${esc(obj)}` : '') + `<br>result: ${D.ev[k + 4]}<div class="d">${esc(D.strings[D.ev[k + 5]])}</div>`;
    }
    if (el.dataset.a !== undefined) {
      const l = +el.dataset.l, ev = BY[l], a = +el.dataset.a, b = +el.dataset.b;
      const byName = new Map();
      for (let k = a; k < b; k++) byName.set(NAME[ev[k]], (byName.get(NAME[ev[k]]) || 0) + 1);
      const top = [...byName].sort((p, q) => q[1] - p[1]).slice(0, 5)
        .map(([n, c]) => `${esc(D.names[n])} × ${c}`).join('<br>');
      return `<b>${b - a} events</b> of ${esc(D.lanes[l])}, #${SEQ[ev[a]]} – #${SEQ[ev[b - 1]]}<br>${top}<br><i>zoom in to see each</i>`;
    }
    if (el.dataset.acc !== undefined) {
      const m = D.acc[+el.dataset.acc];
      return `<b>${m.label ? 'race ' + m.label.slice(1) + ': ' : ''}${m.write ? 'write' : 'read'}</b> (observed access, between two events)<br>${esc(m.text)}`;
    }
    if (el.dataset.flip !== undefined) {
      const f = D.flips[+el.dataset.flip];
      return `<b>${esc(f.text)}</b><br>held: ${esc(D.acc[f.held].text)}<br>waited for: ${esc(D.acc[f.until].text)}`;
    }
    return `<b>${D.failure.failed ? 'the recorded failure' : 'the recorded end'}</b><br>${esc(D.failure.summary)}`;
  }

  // Legend.
  $('legend').innerHTML = CATS.map((c, k) => `<span><i class="c${k}" style="background:currentColor"></i>${c}</span>`).join('') +
    '<span><i style="background:#bee3f8"></i>lock held</span><span><i style="background:#e53e3e;transform:rotate(45deg)"></i>racing access (R1…)</span>' +
    '<span><i style="background:#d53f8c;height:3px"></i>flip: held access → the access it waited for</span><span><i style="background:#c53030;border-radius:5px"></i>failure</span>';
  document.querySelectorAll('#legend i[class]').forEach((i) => { i.style.color = getComputedStyle(i).fill; });

  // Interaction.
  wrap.addEventListener('wheel', (e) => {
    const r = wrap.getBoundingClientRect();
    if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) x0 += (e.deltaX || e.deltaY) / ppe;
    else zoomAt(e.clientX - r.left, Math.exp(-e.deltaY * 0.0015));
    e.preventDefault();
    later();
  }, { passive: false });
  let drag = null;
  wrap.addEventListener('mousedown', (e) => { drag = { x: e.clientX, x0 }; wrap.classList.add('dragging'); });
  window.addEventListener('mouseup', () => { drag = null; wrap.classList.remove('dragging'); });
  window.addEventListener('mousemove', (e) => {
    if (drag) { x0 = drag.x0 - (e.clientX - drag.x) / ppe; tip.hidden = true; later(); return; }
    const html = e.target instanceof Element && svg.contains(e.target) ? tipFor(e.target) : null;
    if (!html) { tip.hidden = true; return; }
    tip.innerHTML = html;
    tip.hidden = false;
    tip.style.left = Math.min(e.clientX + 14, innerWidth - tip.offsetWidth - 8) + 'px';
    tip.style.top = Math.min(e.clientY + 14, innerHeight - tip.offsetHeight - 8) + 'px';
  });
  let ovDrag = false;
  const ovMove = (e) => {
    const r = ovsvg.getBoundingClientRect();
    x0 = (e.clientX - r.left - LABEL) / (plotW() / (XN + 2)) - 1 - plotW() / ppe / 2;
    later();
  };
  ovsvg.addEventListener('mousedown', (e) => { ovDrag = true; ovMove(e); e.preventDefault(); });
  window.addEventListener('mouseup', () => { ovDrag = false; });
  window.addEventListener('mousemove', (e) => { if (ovDrag) ovMove(e); });
  $('zoom-in').onclick = () => zoomAt(LABEL + plotW() / 2, 2);
  $('zoom-out').onclick = () => zoomAt(LABEL + plotW() / 2, 0.5);
  $('zoom-fit').onclick = () => { ppe = minP(); x0 = -1; later(); };
  $('find-next').onclick = search;
  $('search').addEventListener('keydown', (e) => { if (e.key === 'Enter') search(); });
  $('search').addEventListener('input', () => { hit = -1; });
  document.addEventListener('keydown', (e) => {
    if (e.target instanceof HTMLInputElement) return;
    const span = plotW() / ppe;
    if (e.key === '+' || e.key === '=') zoomAt(LABEL + plotW() / 2, 1.5);
    else if (e.key === '-') zoomAt(LABEL + plotW() / 2, 1 / 1.5);
    else if (e.key === '0') { ppe = minP(); x0 = -1; later(); }
    else if (e.key === 'ArrowLeft') { x0 -= span / 4; later(); }
    else if (e.key === 'ArrowRight') { x0 += span / 4; later(); }
  });
  document.querySelectorAll('.race').forEach((el) => el.addEventListener('click', () => {
    const k = +el.dataset.race, acc = accOf(k);
    focusRace = k;
    if (!acc.length) { $('found').textContent = `race ${k + 1}: its accesses were not observed in this run`; render(); return; }
    const xs = acc.map(([a]) => a.X);
    const lo = Math.min(...xs) - 3, hi = Math.max(...xs) + 3;
    ppe = plotW() / (hi - lo);
    x0 = lo;
    render();
    wrap.scrollIntoView({ block: 'nearest' });
  }));
  window.addEventListener('resize', () => { overview(); later(); });

  // First view: around the racing accesses and the failure when there
  // are some, else the whole run; then the time it took, for tests.
  overview();
  ppe = minP();
  if (D.acc.length) {
    const xs = D.acc.map((a) => a.X);
    const hi = Math.max(...xs, D.failure ? XN : 0) + 3, lo = Math.min(...xs) - 24;
    ppe = plotW() / (hi - lo);
    x0 = lo;
  }
  render();
  // `page.html#find=pthread_join` or `#find=1234`: that event, found.
  const q = /^#find=(.*)$/.exec(location.hash);
  if (q) { $('search').value = decodeURIComponent(q[1]); search(); }
  const ms = performance.now();
  document.body.dataset.renderMs = ms.toFixed(0);
  $('render-ms').textContent = ms.toFixed(0);
})();
