import { useEffect, useState } from 'preact/hooks';

/** Client-side routes under /admin; the query string holds a view's filters (shareable). */
export function navigate(url: string, replace = false): void {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  window.dispatchEvent(new Event('s3up:navigate'));
}

export function useLocation(): { path: string; search: URLSearchParams } {
  const read = () => ({ path: location.pathname.replace(/\/+$/, '') || '/admin', search: new URLSearchParams(location.search) });
  const [loc, setLoc] = useState(read);
  useEffect(() => {
    const update = () => setLoc(read());
    window.addEventListener('popstate', update);
    window.addEventListener('s3up:navigate', update);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener('s3up:navigate', update);
    };
  }, []);
  return loc;
}

/** An <a> that navigates inside the app (plain links still work with a modifier key). */
export function linkHandler(e: MouseEvent): void {
  const a = e.currentTarget as HTMLAnchorElement;
  if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute('href') ?? '/admin');
}
