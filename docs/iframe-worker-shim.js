/* editlab's stand-in for a Web Worker on pages opened from file://, where browsers refuse to start workers (the
   docs' search runs in one). The worker script runs in a hidden iframe of the page; messages are relayed both ways.
   Material's search worker looks for `IFrameWorker` on its parent to find its files and awaits `importScripts`, so
   `importScripts` here loads the scripts in order and returns a promise. */
(() => {
  "use strict";
  const load = (doc, urls) => urls.reduce((done, url) => done.then(() => new Promise((ok, fail) => {
    const s = doc.createElement("script");
    s.src = url; s.onload = ok; s.onerror = () => fail(new Error(`could not load ${url}`));
    doc.body.appendChild(s);
  })), Promise.resolve());
  class IFrameWorker extends EventTarget {
    constructor(url) {
      super();
      this.frame = document.createElement("iframe");
      this.frame.hidden = true;
      document.body.appendChild(this.frame);
      const win = this.win = this.frame.contentWindow, doc = win.document;
      doc.open(); doc.write("<!doctype html><html><head></head><body></body></html>"); doc.close();
      win.postMessage = data => this.deliver(data);          // the worker's replies come to this object
      win.importScripts = (...urls) => load(doc, urls);
      this.ready = load(doc, [new URL(url, location.href).href]);
      this.ready.catch(error => {
        const e = new ErrorEvent("error", {message: error.message, error});
        this.dispatchEvent(e); if (this.onerror) this.onerror(e);
      });
    }
    deliver(data) {
      const e = new MessageEvent("message", {data});
      this.dispatchEvent(e); if (this.onmessage) this.onmessage(e);
    }
    postMessage(data) {
      this.ready.then(() => this.win.dispatchEvent(new MessageEvent("message", {data: structuredClone(data)})));
    }
    terminate() { this.frame.remove(); }
  }
  window.IFrameWorker = IFrameWorker;
  if (location.protocol === "file:") window.Worker = IFrameWorker;
})();
