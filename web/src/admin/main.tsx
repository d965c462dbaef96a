import { render } from 'preact';
import '../shared/style.css';
import 'uplot/dist/uPlot.min.css';
import { App } from './app.js';

const root = document.getElementById('app');
if (root) render(<App />, root);
